"""Dispatch task: one action of the run (send once, settle the day's counter, write back, log, plan the next).

The Dispatch state sends {"task": "action", "run": <the run>, "execution": <its name>} and takes the run back
whole (logic/action_step.py); Settle and RunOnFailure send their own tasks (logic/failures.py).
"""

from __future__ import annotations

from typing import Any

from billflow.logic.action_step import run_action_step
from billflow.logic.failures import run_task
from billflow.observability import logger
from billflow.settings import requires_settings
from billflow.storage.idempotency import register_lambda_context


@logger.inject_lambda_context(clear_state=True)
@requires_settings("idempotency_table", "counters_table", "execution_log_table")
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    register_lambda_context(context)  # an in-progress send expires with the invocation, so a retry can run
    if event.get("task") == "action":
        return run_action_step(event["run"], str(event["execution"]))
    return run_task(event)
