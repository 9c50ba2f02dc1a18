"""Daily limits' companions: the usage-threshold notification and the failure-log digest (seed 004).

Limits themselves are enforced by the state machine (CountDaily): one conditional counter per tenant,
action type and UTC day in the counters table, so concurrent runs can never send more than the limit.

Usage threshold (TenantSettings.usage_alert, e.g. 80 %): when a send takes an action type's count for the
day to or past the threshold, admins are told once that day: a conditional put of
"<tenant>#usage-alert#<type>#<day>" in the counters table decides which run tells them. The message goes
to the failure topic (attributes tenant, status=usage_threshold, action_type) and, with recipients and
SES_FROM_ADDRESS, by email.

Failure digest (TenantSettings.failure_digest: daily or weekly, at a time in a time zone): the scheduler
sends each tenant, once per scheduled time (a conditional update of "<tenant>#failure-digest" claims it),
the failed and limited runs of the execution log (its by-status index) since the previous digest.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from billflow.models.rules import FailureDigest
from billflow.models.run import RunState
from billflow.observability import logger
from billflow.storage.alerts import send_alert
from billflow.storage.counters import Counters, get_counters
from billflow.storage.execution_log import ExecutionLog, get_execution_log, log_time
from billflow.storage.rules import RuleStore

DIGEST_STATUSES = ("failed", "limited")
DIGEST_MAX_LINES = 50
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def alert_at(limit: int, threshold_percent: int) -> int:
    """The count at which the threshold is reached: 80 % of 5 is the 4th send."""
    return max(1, math.ceil(limit * threshold_percent / 100))


# ------------------------------------------------------------------------------------------- usage threshold
def check_usage(state: RunState, step: dict[str, Any], counted: dict[str, Any]) -> bool:
    """After CountDaily: tell admins if this send reached the threshold and nobody told them today.

    Never raises: a notification problem must not stop the send it rides on. True if this run told them.
    """
    counter = step.get("counter") or {}
    if state.usage_alert is None or "alert_at" not in counter or state.dry_run:
        return False
    try:
        count = int(counted["Attributes"]["count"]["N"])
    except (KeyError, TypeError, ValueError):
        return False
    if count < int(counter["alert_at"]):
        return False
    try:
        return _usage_alert(state, step, count)
    except Exception as exc:
        logger.warning("usage alert not sent", extra={"error": f"{type(exc).__name__}: {exc}"})
        return False


def _usage_alert(state: RunState, step: dict[str, Any], count: int) -> bool:
    assert state.usage_alert is not None
    counter = step["counter"]
    action_type = str(step.get("action_type", ""))
    day = str(counter.get("day") or counter["pk"].rsplit("#", 1)[-1])
    if not get_counters().claim(f"{state.tenant}#usage-alert#{action_type}#{day}"):
        return False
    limit = int(counter["limit"])
    percent = state.usage_alert.threshold_percent
    subject = f"billflow: {action_type} sends at {percent}% of the daily limit"
    message = (f"Tenant {state.tenant}: {count} of {limit} {action_type} sends allowed on {day} (UTC) are used, "
               f"the {percent}% threshold. Once {limit} are sent, further runs are limited until the next day. "
               f"Raise the limit in the tenant settings (daily_limits.{action_type}) if this is expected.")
    send_alert(state.tenant, subject, message, {"status": "usage_threshold", "action_type": action_type},
               state.usage_alert.recipients)
    logger.info("usage threshold reached", extra={"tenant": state.tenant, "action_type": action_type,
                                                   "count": count, "limit": limit})
    return True


# ------------------------------------------------------------------------------------------- failure digest
def digest_instant(digest: FailureDigest, now: datetime) -> datetime:
    """The latest scheduled digest time at or before `now` (UTC)."""
    zone = ZoneInfo(digest.timezone)
    hour, minute = (int(part) for part in digest.at.split(":"))
    local = now.astimezone(zone)
    candidate = datetime(local.year, local.month, local.day, hour, minute, tzinfo=zone)
    if digest.frequency == "weekly":
        candidate -= timedelta(days=(candidate.weekday() - _WEEKDAYS.index(digest.weekday)) % 7)
    period = timedelta(days=7 if digest.frequency == "weekly" else 1)
    while candidate.astimezone(UTC) > now:
        candidate = (candidate - period).replace(hour=hour, minute=minute)
    return candidate.astimezone(UTC)


def digest_period(digest: FailureDigest) -> timedelta:
    return timedelta(days=7 if digest.frequency == "weekly" else 1)


def send_failure_digests(
    now: datetime, rule_store: RuleStore, counters: Counters | None = None, log: ExecutionLog | None = None,
) -> list[str]:
    """Each tenant's digest whose time has come and was not sent yet; the tenants sent one."""
    sent: list[str] = []
    for tenant in rule_store.tenants_with_settings():
        digest = rule_store.tenant_settings(tenant).failure_digest
        if digest is None or digest.frequency == "off":
            continue
        instant = digest_instant(digest, now)
        counters = counters or get_counters()
        previous = counters.claim_digest(tenant, instant, digest_period(digest))
        if previous is None:
            continue
        log = log or get_execution_log()
        items = log.between(tenant, DIGEST_STATUSES, previous, instant)
        if items:
            subject, message = digest_text(tenant, digest, previous, instant, items)
            send_alert(tenant, subject, message, {"status": "failure_digest"}, digest.recipients)
            sent.append(tenant)
    return sent


def digest_text(tenant: str, digest: FailureDigest, since: datetime, until: datetime,
                items: list[dict[str, Any]]) -> tuple[str, str]:
    failed = sum(1 for i in items if i.get("status") == "failed")
    limited = len(items) - failed
    subject = f"billflow: {failed} failed and {limited} limited run(s) for {tenant}"
    lines = [f"Tenant {tenant}, {digest.frequency} failure digest: runs from {log_time(since)} to "
             f"{log_time(until)} (UTC).", f"{failed} failed, {limited} limited.", ""]
    for item in items[:DIGEST_MAX_LINES]:
        record = str(item.get("record_key", "")).removeprefix(f"{tenant}#").replace("#", ":")
        lines.append(f"- {item.get('at', '')} {item.get('status')}: rule {item.get('rule_id')}, record {record}, "
                     f"run {item.get('execution')}: {item.get('reason', '')}")
    if len(items) > DIGEST_MAX_LINES:
        lines.append(f"... and {len(items) - DIGEST_MAX_LINES} more: `billflow log --status failed`.")
    lines.append("")
    lines.append("Replay a failed run once its cause is fixed: `billflow replay <run>`.")
    return subject, "\n".join(lines)
