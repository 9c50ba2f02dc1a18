"""Scheduler: invoked by EventBridge Scheduler.

- The stack's own schedule ({"time": ...}): start the runs of date-triggered rules that came due since its
  previous run, and send the failure digests whose time has come (logic/schedule.py, logic/limits.py).
  The event's `time` is "now" (the instant the schedule fired), so a late or repeated invocation covers the
  window it was meant to; invoking it by hand with {"time": "2026-03-28T09:00:00Z"} does the same.
- A tenant's recurring schedule ({"kind": "schedule", "tenant", "schedule", "time": Scheduler's
  <aws.scheduler.scheduled-time>}): run its rule for that firing (logic/schedules.py); a repeated delivery
  of the same firing starts nothing new.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from billflow.errors import TransientError
from billflow.models.run import parse_utc
from billflow.observability import logger
from billflow.settings import requires_settings


@logger.inject_lambda_context(clear_state=True)
@requires_settings("rules_table", "records_table", "counters_table", "execution_log_table", "state_machine_arn")
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    when = event.get("time") if isinstance(event, dict) else None
    now = parse_utc(when) if isinstance(when, str) and when else datetime.now(UTC)
    if isinstance(event, dict) and event.get("kind") == "schedule":
        return _fire(event, now)
    from billflow.logic.schedule import run_scheduler

    run = run_scheduler(now)
    summary = run.summary()
    logger.info("scheduler ran", extra=summary)
    if run.errors:
        # The window stays open (its checkpoint did not move): Lambda's retry, or the next run, redoes it;
        # runs already started are refused as duplicates by their names.
        raise TransientError(f"{len(run.errors)} due item(s) failed: {run.errors[0]}")
    return summary


def _fire(event: dict[str, Any], firing: datetime) -> dict[str, Any]:
    from billflow.logic.schedules import fire_schedule
    from billflow.storage.executions import get_executions
    from billflow.storage.rules import get_rule_store
    from billflow.storage.schedules import get_schedule_store, get_scheduler_api

    report = fire_schedule(
        str(event.get("tenant", "")), str(event.get("schedule", "")), firing, datetime.now(UTC),
        schedule_store=get_schedule_store(), rule_store=get_rule_store(), executions=get_executions(),
        scheduler=get_scheduler_api(),
    )
    summary = report.summary()
    logger.info("schedule fired", extra=summary)
    if report.errors:
        # Lambda retries the invocation; runs already started are refused as duplicates by their names.
        raise TransientError(f"schedule {report.schedule}: {report.errors[0]}")
    return summary
