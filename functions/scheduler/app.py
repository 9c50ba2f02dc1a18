"""Scheduler: on an EventBridge schedule, start the runs of date-triggered rules that came due since its
previous run, and send the failure digests whose time has come (logic/schedule.py, logic/limits.py).

The scheduled event's `time` is "now" (the instant the schedule fired), so a late or repeated invocation
covers the window it was meant to; invoking it by hand with {"time": "2026-03-28T09:00:00Z"} does the same.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from billflow.errors import TransientError
from billflow.logic.schedule import run_scheduler
from billflow.models.run import parse_utc
from billflow.observability import logger
from billflow.settings import requires_settings


@logger.inject_lambda_context(clear_state=True)
@requires_settings("rules_table", "records_table", "counters_table", "execution_log_table", "state_machine_arn")
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    when = event.get("time") if isinstance(event, dict) else None
    now = parse_utc(when) if isinstance(when, str) and when else datetime.now(UTC)
    run = run_scheduler(now)
    summary = run.summary()
    logger.info("scheduler ran", extra=summary)
    if run.errors:
        # The window stays open (its checkpoint did not move): Lambda's retry, or the next run, redoes it;
        # runs already started are refused as duplicates by their names.
        raise TransientError(f"{len(run.errors)} due item(s) failed: {run.errors[0]}")
    return summary
