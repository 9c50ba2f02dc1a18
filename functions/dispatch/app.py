"""Dispatch task: send the planned action once (idempotency key per transition and action)."""

from __future__ import annotations

from typing import Any

from billflow.logic.failures import run_task
from billflow.logic.run import dispatch
from billflow.models.run import RunState
from billflow.observability import logger
from billflow.settings import requires_settings
from billflow.storage.idempotency import register_lambda_context


@logger.inject_lambda_context(clear_state=True)
@requires_settings("idempotency_table")
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    register_lambda_context(context)  # an in-progress send expires with the invocation, so a retry can run
    if "task" in event:  # Settle (a refused reservation) and RunOnFailure (the rule's error branch)
        return run_task(event)
    # "counted": CountDaily's answer (the day's count after this send), for the usage-threshold alert.
    return dispatch(RunState.model_validate(event), event["step"], event.get("dispatched"), event.get("counted"))
