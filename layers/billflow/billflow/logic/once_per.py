"""One document per record and rule, unless the rule asks for one per transition (issue 8 §2).

Runs are named by their transition, so a change delivered many times makes one run. A deal that is won,
reopened and won again is a second transition, though, and would be invoiced a second time. HubSpot users
know the guard ("source is not invoice"): before a document action sends, billflow looks for a document of
the same type that the same rule already made for the same record,

- in the record's `write_back_field` (the id the first run wrote back to the CRM), or
- in the execution log (the record's index: an action of this rule and type with an external id),

and if it finds one, it sends nothing and logs the action `skipped` with "already invoiced <id>". A rule
with `once_per: transition` makes one document per transition instead.

Documents of the run's own transition are not "earlier": a retried or replayed send of the same transition
is answered by its idempotency key, which returns the first document rather than skipping.
"""

from __future__ import annotations

from typing import Any

from billflow.models.rules import DOCUMENT_ACTIONS, Action
from billflow.models.run import RunState
from billflow.rules.paths import MISSING, get_path
from billflow.storage import keys
from billflow.storage.execution_log import get_execution_log, log_item

LOG_ITEMS_SEARCHED = 200  # a record's newest log items: far more than the runs one record ever has
NOT_A_DOCUMENT = frozenset({"failed", "skipped", "limited", "not_matched", "scheduled", "rescheduled"})


def earlier_document(state: RunState, action: Action) -> str | None:
    """The id of a document of this type the rule already made for this record in another transition."""
    if action.type not in DOCUMENT_ACTIONS or state.rule.once_per == "transition":
        return None
    logged: list[dict[str, Any]] = [
        item for item in get_execution_log().by_record(state.log.record_key, LOG_ITEMS_SEARCHED)
        if item.get("rule_id") == state.rule.id and item.get("action_type") == action.type
        and item.get("external_id") and str(item.get("step", "")).startswith("action-")
        and item.get("status") not in NOT_A_DOCUMENT
    ]
    own = {str(item["external_id"]) for item in logged if item.get("transition") == state.transition}
    if action.write_back_field:
        written = get_path(state.record(), action.write_back_field)
        if written not in (MISSING, None, "") and str(written) not in own:
            return str(written)
    for item in logged:  # newest first
        if item.get("transition") != state.transition:
            return str(item["external_id"])
    return None


def send_key(state: RunState, action: Action, index: int) -> str:
    """The idempotency key of the run's `index`th send (issue 11).

    A document action of a once-per-record rule is keyed by (tenant, rule, record, document type), not by the
    run's transition: two runs of one rule for one record that race to dispatch (a late webhook and the sweep
    when the CRM's event time and last-modified time differ, so their transitions do) send once, and the
    second gets the first's document from the idempotency table and the target's own idempotency key.
    Everything else is keyed by its run, as before (a once-per-transition rule makes one per transition)."""
    if action.type in DOCUMENT_ACTIONS and state.rule.once_per == "record":
        document = keys.execution_key(state.tenant, state.rule.id, state.log.record_key, f"document:{action.type}")
        return f"{document}:{index}"
    return f"{state.execution_key}:{index}"


def skipped_dispatch(state: RunState, step: dict[str, Any], action: Action, existing: str) -> dict[str, Any]:
    """What Dispatch answers for a document not made again: the state machine releases its daily-limit
    place (nothing was sent), skips the write-back and logs the action skipped. Later actions of the run
    see the existing document as `dispatch` (its id, for a webhook that announces it)."""
    reason = f"already invoiced {existing}" if action.type == "invoice" else f"already made {action.type} {existing}"
    outcome = {"index": step["index"], "action_type": action.type, "status": "skipped", "external_id": existing,
               "external_url": None, "details": {"reason": reason, "once_per": state.rule.once_per}}
    item = log_item(
        tenant=state.tenant, execution=state.execution_name or state.execution_key, rule_id=state.rule.id,
        record_key=state.log.record_key, step=f"action-{step['index']}", status="skipped", reason=reason,
        external_id=existing, action_type=action.type, transition=state.transition, trigger=state.log.trigger,
    )
    return {"outcome": outcome, "results": [*state.results, outcome], "log_item": item}
