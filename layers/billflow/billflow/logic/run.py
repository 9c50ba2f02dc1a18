"""The tasks of one execution: lookup, format (the next action; decide; resume), dispatch and write-back.

Each takes the execution's state document and returns what the state machine stores at that task's
ResultPath. The state machine owns order, retries, waits, limits and logging; these own the content.

plan_next answers one of:
- {"lookup_after": seconds}: Lookup found the CRM's call budget spent (Twenty's 100 calls a minute per API
  key, say) and said when it frees: the state machine waits that long (WaitForCrm) and looks up again, so a
  burst of won deals waits for the CRM instead of failing once its retries run out;
- {"done": true, "log_item"}: every action is done (or skipped);
- {"decide": true}: the rule's criteria need what Lookup fetched (company/contact criteria, a date
  trigger): the state machine calls decide(), which answers with the whole run, its blocks chosen, or
  ends it quietly (logged "not_matched");
- {"wait_until", "group", "refresh", "log_item"}: the next actions are time-based; the state machine logs
  "scheduled", waits until then (Wait, TimestampPath), fetches the record again if the group needs it
  (refresh: it rechecks criteria or follows a date field), and calls resume();
- {"resume": true}: a time-based group that will not run (its time had passed): resume() skips it;
- an action step: the action, its rendered request and its daily-limit counter.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from billflow.errors import ConfigurationError, TransientError
from billflow.logic.reservations import lease_end
from billflow.models.events import GENERIC_SOURCES
from billflow.models.rules import DOCUMENT_ACTIONS, LOOKUP_ROOTS, Action, DateTrigger, block_requires_line_items
from billflow.models.run import RunState, parse_utc, utc_text
from billflow.observability import logger
from billflow.rules.paths import MISSING, get_path
from billflow.storage import keys
from billflow.storage.execution_log import log_item

# Imported where used: each task runs in a function of its own (Lookup, Format, Dispatch, Write-back), and
# a cold start pays only for its own path; Format's next action needs no CRM connector, secrets, send-once
# table, rule engine or schedule (those are decide/resume's), nor the usage limits unless the rule alerts;
# Lookup and Write-back need no action type.
if TYPE_CHECKING:
    from billflow.models.documents import DispatchResult
    from billflow.storage.secrets import Connection

COUNTER_TTL_SECONDS = 3 * 86400
MAX_RETRY_AFTER_ROUNDS = 5


def crm_connection(state: RunState) -> Connection:
    """The CRM a rule's source talks back to is the tenant's connection named after the source."""
    from billflow.storage.secrets import get_secret_store

    return get_secret_store().connection(state.tenant, state.event.source)


# A run waits for its CRM's budget at most this many times (WaitForCrm), about two hours of windows of a
# minute: a budget that stays spent that long is a misconfiguration, and the run fails saying so.
MAX_CRM_WAITS = 120


def lookup(state: RunState) -> dict[str, Any]:
    """The record's company and contact; with refresh_record, the record itself as the CRM holds it now
    (under "record"; None when the CRM no longer has it). When the CRM's call budget is spent, when to try
    again instead: {"retry_after": seconds, "crm_waits": n} (see plan_next and resume)."""
    try:
        return _lookup(state)
    except TransientError as exc:
        waits = int(state.lookup.get("crm_waits") or 0)
        if exc.retry_after_seconds is None or waits >= MAX_CRM_WAITS:
            raise
        seconds = max(1, math.ceil(exc.retry_after_seconds))
        logger.info("CRM budget spent; the run waits for it", extra={"reason": exc.message, "seconds": seconds,
                                                                    "waits": waits + 1})
        return {"retry_after": seconds, "crm_waits": waits + 1}


def _lookup(state: RunState) -> dict[str, Any]:
    try:
        connection = crm_connection(state)
    except ConfigurationError:
        if state.event.source in GENERIC_SOURCES:
            return {}  # a generic source with no connection: nothing to look up (issue 11: with one, its calls)
        raise
    from billflow.connectors import get_crm

    crm = get_crm(connection.type)
    if not state.refresh_record:
        return crm.lookup(connection, state.event.object, state.event.record)
    record = crm.get_record(connection, state.event.object, state.event.record_id, fields=state.rule.record_fields())
    if record is None:
        return {"record": None}
    return {**crm.lookup(connection, state.event.object, record), "record": record}


def plan_next(state: RunState, now: datetime | None = None) -> dict[str, Any]:
    """The next thing the run does (see the module's docstring)."""
    if "retry_after" in state.lookup:  # first: nothing else can be decided without what Lookup fetches
        return {"done": False, "lookup_after": state.lookup["retry_after"]}
    if state.recheck:
        return {"done": False, "decide": True}
    index = len(state.results)
    execution = state.execution_name
    sequence = state.sequence()
    if index >= len(sequence):
        return {"done": True, "log_item": _log(state, execution, "run", "succeeded", _summary(state),
                                               _last_external_id(state))}
    position = state.group_at(index)
    if position is not None and state.waited <= position:
        group = state.timed[position]
        if group.skip:
            return {"done": False, "resume": True, "group": position}
        return {
            "done": False, "wait_until": group.due, "group": position,
            "refresh": group.recheck or group.field is not None,
            "log_item": _log(state, execution, f"wait-{position}", "scheduled",
                             f"{group.label}: waiting until {group.due}", ""),
        }
    action = sequence[index]
    now = now or datetime.now(UTC)
    limit = state.daily_limits.get(action.limit_key, state.default_daily_limit)
    step: dict[str, Any] = {
        "done": False,
        "index": index,
        "action_type": action.type,
        "action": action.model_dump(mode="json"),
        "request": render_request(action, state),
        "counter": {
            "pk": keys.counter_pk(state.tenant, action.limit_key, now.strftime("%Y-%m-%d")),
            "day": now.strftime("%Y-%m-%d"),
            "limit": str(limit),
            "expires_at": str(int(now.timestamp()) + COUNTER_TTL_SECONDS),
            "hold_expires_at": lease_end(now.timestamp()),  # issue 8 §4: the reservation's lease
        },
    }
    if state.usage_alert is not None:
        from billflow.logic.limits import alert_at

        step["counter"]["alert_at"] = str(alert_at(limit, state.usage_alert.threshold_percent))
    # Write-back stores the document id on the record and/or the matched customer on the company.
    if action.type in DOCUMENT_ACTIONS and (action.write_back_field or action.options.get("customer_id_field")):
        step["write_back"] = {"field": action.write_back_field}
    return step


def _summary(state: RunState) -> str:
    done = sum(1 for r in state.results if r.get("status") != "skipped")
    skipped = len(state.results) - done
    return f"{done} action(s) done" + (f", {skipped} skipped" if skipped else "")


def _last_external_id(state: RunState) -> str:
    """The run's document id (an invoice, not the delivery of a webhook after it); else the last action's."""
    ids = [r for r in state.results if r.get("external_id")]
    documents = [r for r in ids if r.get("action_type") in DOCUMENT_ACTIONS]
    return str((documents or ids[::-1] or [{"external_id": ""}])[0]["external_id"])


# ------------------------------------------------------------------------------------------- decide, resume
_TRANSIENT_KEYS = frozenset({"step", "dispatched", "written", "counted", "error", "decision", "resumed"})


def _document(state: RunState, **extra: Any) -> dict[str, Any]:
    """The whole run as the next states want it: the task results of the last round dropped."""
    doc = state.model_dump(mode="json")
    for key in _TRANSIENT_KEYS:
        doc.pop(key, None)
    return {**doc, **extra}


def _lookup_roots(state: RunState) -> dict[str, Any]:
    return {k: v for k, v in state.lookup.items() if k in LOOKUP_ROOTS}


def decide(state: RunState, now: datetime | None = None) -> dict[str, Any]:
    """After Lookup: which of the run's candidate blocks hold, on the record and what Lookup fetched.

    The whole run comes back, with its blocks, immediate and time-based actions chosen, and
    decision.matched; when none holds, decision.log_item says why (status not_matched) and the run ends.
    """
    from billflow.logic.schedule import occurrence_after, plan_timed, trigger_zone
    from billflow.rules.engine import Clock, evaluate_blocks

    rule = state.rule
    if state.refresh_record and state.lookup.get("record") is None and "record" in state.lookup:
        return _not_matched(state, "the record no longer exists in the CRM")
    record = state.record()
    trigger_at = parse_utc(state.trigger_at) if state.trigger_at else state.event.received_at
    if isinstance(rule.trigger, DateTrigger):
        value = get_path(record, rule.trigger.field)
        value = None if value is MISSING else value
        due = occurrence_after(rule.trigger, value, trigger_zone(rule), trigger_at - timedelta(seconds=1))
        if due != trigger_at:
            return _not_matched(state, f"{rule.trigger.field} is now {value!r}: it no longer falls due at "
                                       f"{utc_text(trigger_at)}")
    clock = Clock(zone=ZoneInfo(rule.timezone), now=now, lookup=_lookup_roots(state), held=state.held)
    blocks, selected = evaluate_blocks(rule, record, {}, clock, only=state.blocks)
    if not selected:
        failing = [f"block {b.index + 1}: " + "; ".join(c.reason for c in b.criteria if not c.matched)
                   for b in blocks]
        return _not_matched(state, "no block's criteria hold after Lookup (" + " | ".join(failing) + ")")
    if not state.lookup.get("line_items"):  # issue 11: require_line_items
        wanting = [a.type for index in selected for a in block_requires_line_items(rule.blocks[index])]
        if wanting:
            return _not_matched(state, f"the record has no line items and {', '.join(sorted(set(wanting)))} "
                                       "requires them (require_line_items)")
    actions = [a for index in selected for a in rule.blocks[index].actions]
    decided = state.model_copy(update={
        "blocks": selected, "actions": actions, "timed": plan_timed(rule, selected, record, trigger_at),
        "recheck": False, "refresh_record": False,
    })
    return _document(decided, decision={"matched": True, "blocks": selected})


def _not_matched(state: RunState, reason: str) -> dict[str, Any]:
    logger.info("run ends: criteria do not hold after Lookup", extra={"reason": reason})
    item = _log(state, state.execution_name, "run", "not_matched", reason, "")
    return _document(state, decision={"matched": False, "log_item": item})


def resume(state: RunState, now: datetime | None = None) -> dict[str, Any]:
    """A time-based group's time has come: run it, wait longer (its date moved later), or skip it.

    With recheck_criteria, its block's criteria are checked on the record as the CRM holds it now (a
    transition holds if the field still has the value it changed to); if they fail, its actions are
    skipped and logged so. The whole run comes back; resumed.log_item is what to log, if anything.
    """
    from billflow.logic.schedule import RESCHEDULE_TOLERANCE, group_due
    from billflow.rules.engine import Clock, evaluate_block

    if "retry_after" in state.lookup:  # Refresh found the CRM's budget spent: wait, then refresh again
        return _document(state, resumed={"lookup_after": state.lookup["retry_after"]})
    position = state.waited
    group = state.timed[position]
    rule = state.rule
    zone = ZoneInfo(rule.timezone)
    refreshed = "record" in state.lookup
    fresh = state.lookup.get("record") if refreshed else state.event.record
    reason = group.skip
    if not reason and refreshed and fresh is None:
        reason = "the record no longer exists in the CRM"
    if not reason and group.field and isinstance(fresh, dict):
        due, why = group_due(rule.blocks[group.block].time_based[group.group], fresh,
                             parse_utc(state.trigger_at) if state.trigger_at else state.event.received_at, zone)
        if due is None:
            reason = why
        elif due > parse_utc(group.due) + RESCHEDULE_TOLERANCE:
            timed = list(state.timed)
            timed[position] = group.model_copy(update={"due": utc_text(due)})
            moved = state.model_copy(update={"timed": timed, "refresh_record": False})
            note = _log(state, state.execution_name, f"wait-{position}", "rescheduled",
                        f"{group.field} moved: {group.label} is now {utc_text(due)}", "")
            return _document(moved, resumed={"rescheduled": True, "log_item": note})
    if not reason and group.recheck and isinstance(fresh, dict):
        clock = Clock(zone=zone, now=now, lookup=_lookup_roots(state), held=state.held, since=state.event.record)
        verdict = evaluate_block(group.block, rule.blocks[group.block], fresh, {}, clock)
        if not verdict.matched:
            reason = "criteria no longer hold: " + "; ".join(c.reason for c in verdict.criteria if not c.matched)
    if not reason:
        return _document(state.model_copy(update={"waited": position + 1, "refresh_record": False}),
                         resumed={"skipped": False})
    start = len(state.results)
    skipped = [{"index": start + i, "action_type": action.type, "status": "skipped", "external_id": None,
                "external_url": None, "details": {"reason": reason}} for i, action in enumerate(group.actions)]
    after = state.model_copy(update={"waited": position + 1, "refresh_record": False,
                                     "results": [*state.results, *skipped]})
    note = _log(state, state.execution_name, f"wait-{position}", "skipped", f"{group.label}: {reason}", "")
    return _document(after, resumed={"skipped": True, "log_item": note})


def render_request(action: Action, state: RunState) -> dict[str, Any]:
    from billflow.actions import get_action_type

    return get_action_type(action.type).render(action, state)


def dispatch(
    state: RunState, step: dict[str, Any], previous: dict[str, Any] | None, counted: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Send one action. A TransientError with Retry-After becomes a wait in the state machine.

    `counted` is CountDaily's answer (the day's count after this send): past the tenant's usage threshold,
    admins are told once a day (logic/limits.py), whatever becomes of the send.
    """
    action = Action.model_validate(step["action"])
    from billflow.logic.once_per import earlier_document, send_key, skipped_dispatch  # issue 8 §2

    if (existing := earlier_document(state, action)) is not None:
        return skipped_dispatch(state, step, action, existing)
    key = send_key(state, action, step["index"])  # issue 11: one document per record even when runs race
    attempt = int((previous or {}).get("attempt", 0)) + 1
    if counted and previous is None:
        from billflow.logic.limits import check_usage

        check_usage(state, step, counted)
    try:
        result = send_once(state, action, step["request"], key)
    except TransientError as exc:
        if exc.retry_after_seconds is None or attempt >= MAX_RETRY_AFTER_ROUNDS:
            raise
        wait = max(1, int(exc.retry_after_seconds + 0.999))
        # The reservation's lease is renewed past the wait (RenewHold).
        return {"retry_after": wait, "attempt": attempt, "reason": exc.message,
                "hold_expires_at": lease_end(extra_seconds=wait)}
    outcome = {"index": step["index"], "action_type": action.type, **result.model_dump(mode="json")}
    execution = state.execution_name
    return {
        "outcome": outcome,
        "results": [*state.results, outcome],
        "log_item": _log(state, execution, f"action-{step['index']}", result.status, "",
                         result.external_id or "", action.type),
    }


def send_once(state: RunState, action: Action, request: dict[str, Any], key: str) -> DispatchResult:
    """The send, made idempotent by its key: a retried task returns the first answer, sends nothing."""
    from billflow.actions import get_action_type
    from billflow.storage.idempotency import once

    return once(key, lambda: get_action_type(action.type).send(action, request, state, key))


def write_back(state: RunState, step: dict[str, Any], dispatched: dict[str, Any]) -> dict[str, Any]:
    """Store the created document's id on the CRM record (and the matched customer on the company)."""
    field = step["write_back"].get("field")
    outcome = dispatched["outcome"]
    from billflow.connectors import get_crm

    connection = crm_connection(state)
    crm = get_crm(connection.type)
    written: dict[str, Any] = {}
    if field:
        crm.update_record(connection, state.event.object, state.event.record_id, {field: outcome["external_id"]})
        written[field] = outcome["external_id"]
    customer_field = (step["action"].get("options") or {}).get("customer_id_field")
    company = state.lookup.get("company") or {}
    customer_id = (outcome.get("details") or {}).get("customer_id")
    if customer_field and customer_id and company.get("id") and company.get(customer_field) != customer_id:
        crm.update_record(connection, "company", company["id"], {customer_field: customer_id})
        written[f"company.{customer_field}"] = customer_id
    return written


def _log(
    state: RunState, execution: str, step: str, status: str, reason: str, external_id: str,
    action_type: str = "",
) -> dict[str, Any]:
    return log_item(
        tenant=state.tenant, execution=execution or state.execution_key, rule_id=state.rule.id,
        record_key=state.log.record_key, step=step, status=status, reason=reason,
        external_id=external_id, action_type=action_type, transition=state.transition, trigger=state.log.trigger,
    )

