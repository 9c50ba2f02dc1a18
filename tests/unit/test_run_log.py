"""The execution log's run row names the run's document (the invoice), not the action that ran last."""

from __future__ import annotations

from datetime import UTC, datetime

from billflow.logic.filter import build_run_state
from billflow.logic.run import plan_next
from billflow.models.events import CrmEvent
from billflow.models.rules import Rule
from billflow.rules.comparators import FieldChange
from billflow.rules.engine import evaluate_rule

AT = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def test_the_run_row_carries_the_documents_id_when_a_webhook_followed_it() -> None:
    rule = Rule.model_validate({
        "id": "won", "source": "twenty", "object": "opportunity", "trigger": {"on": "edited"},
        "criteria": [{"field": "stage", "comparator": "changed_to", "value": "CUSTOMER"}],
        "actions": [{"type": "invoice", "connection": "stripe"}, {"type": "webhook", "connection": "hook"}],
    })
    event = CrmEvent(event_id="e1", tenant="acme", source="twenty", object="opportunity", action="updated",
                     record_id="r1", record={"stage": "CUSTOMER"}, changed_fields=["stage"], occurred_at=AT,
                     received_at=AT)
    verdict = evaluate_rule(rule, event, {"stage": FieldChange("stage", "PROPOSAL", "CUSTOMER", 2)})
    state = build_run_state(event, verdict, {})
    done = state.model_copy(update={"results": [
        {"index": 0, "action_type": "invoice", "status": "sent", "external_id": "in_123"},
        {"index": 1, "action_type": "webhook", "status": "sent", "external_id": "delivery_1"},
    ]})
    step = plan_next(done)
    assert step["done"] is True
    assert step["log_item"]["external_id"] == {"S": "in_123"}
