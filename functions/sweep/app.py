"""Sweep: catch the webhooks a CRM never delivered (logic/sweep.py).

Two callers, two events:
- the stack's EventBridge Scheduler schedule, every SweepSchedule: {"kind": "due", "time": "<scheduled time>"}
  sweeps every tenant's rules whose `sweep.every` has passed, each over its `sweep.window`;
- the admin API (POST /admin/tenants/{tenant}/sweeps, `billflow sweep`), synchronously:
  {"kind": "rule", "tenant", "rule_id", "since", "until"?, "dry_run"?} sweeps one rule over that window and
  answers its report, or {"error": {...}, "status": 4xx} for what the caller must fix.

A function of its own rather than the scheduler's: a sweep pages through a CRM's search for minutes (its
own timeout), needs the CRM connections' secrets (the scheduler does not), and fails on its own queue.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from billflow.errors import BillflowError, InvalidRequest, TransientError
from billflow.logic.sweep import run_due_sweeps, sweep_by_hand
from billflow.models.run import parse_utc
from billflow.observability import logger
from billflow.settings import requires_settings


@logger.inject_lambda_context(clear_state=True)
@requires_settings("rules_table", "records_table", "counters_table", "execution_log_table", "state_machine_arn")
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    event = event if isinstance(event, dict) else {}
    if event.get("kind") == "rule":
        try:
            report = sweep_by_hand(
                str(event.get("tenant") or ""), str(event.get("rule_id") or ""), _time(event, "since"),
                _time(event, "until") if event.get("until") else None, bool(event.get("dry_run")),
            )
        except TransientError:
            raise
        except BillflowError as exc:
            return {"status": exc.http_status, "error": exc.to_body()}
        return {"status": 200, "report": report.summary()}
    reports = run_due_sweeps(_scheduled_time(event.get("time")))
    summary = {"swept": [r.summary() for r in reports]}
    logger.info("sweeps ran", extra={"rules": len(reports), "fed": sum(len(r.fed) for r in reports)})
    return summary


def _scheduled_time(value: Any) -> datetime:
    """The schedule's own time (EventBridge Scheduler fills <aws.scheduler.scheduled-time>); now when the
    caller gave none, or a placeholder nothing filled in."""
    if isinstance(value, str) and value.strip():
        try:
            return parse_utc(value.strip())
        except ValueError:
            logger.warning("sweep time is not a time; sweeping now", extra={"time": value[:100]})
    return datetime.now(UTC)


def _time(event: dict[str, Any], key: str) -> datetime:
    value = event.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{key}: an ISO 8601 time is needed, e.g. 2026-12-01T00:00:00Z")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{key}: {value!r} is not an ISO 8601 time (e.g. 2026-12-01T00:00:00Z)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
