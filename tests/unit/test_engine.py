"""The rule engine: triggers, criteria, patterns and the transition that names an execution."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from billflow.models.events import CrmEvent
from billflow.models.rules import Rule
from billflow.rules.comparators import FieldChange
from billflow.rules.engine import evaluate_rule

WON_RULE = {
    "id": "won-to-stripe",
    "source": "twenty",
    "object": "opportunity",
    "trigger": {"on": "edited"},
    "criteria": [
        {"field": "stage", "comparator": "changed_to", "value": "CUSTOMER"},
        {"field": "amount.amountMicros", "comparator": "greater_than", "value": 0},
    ],
    "pattern": "1 AND 2",
    "actions": [{"type": "stripe.invoice", "connection": "stripe-main"}],
}


def event(record: dict[str, Any], action: str = "updated", changed: list[str] | None = None) -> CrmEvent:
    return CrmEvent(
        event_id="e1", tenant="acme", source="twenty", object="opportunity", action=action,  # type: ignore[arg-type]
        record_id="r1", record=record, changed_fields=changed,
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC), received_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_won_transition_matches_and_names_the_transition() -> None:
    record = {"stage": "CUSTOMER", "amount": {"amountMicros": 5_000_000}}
    changes = {"stage": FieldChange("stage", "PROPOSAL", "CUSTOMER", 3)}
    verdict = evaluate_rule(Rule.model_validate(WON_RULE), event(record), changes)
    assert verdict.matched
    assert verdict.transition == "stage@3"


def test_no_stage_change_means_no_match_even_when_won() -> None:
    record = {"stage": "CUSTOMER", "amount": {"amountMicros": 5_000_000}}
    verdict = evaluate_rule(Rule.model_validate(WON_RULE), event(record), {})
    assert not verdict.matched
    assert "stage did not change" in verdict.blocks[0].criteria[0].reason


def test_zero_amount_fails_the_second_criterion() -> None:
    record = {"stage": "CUSTOMER", "amount": {"amountMicros": 0}}
    changes = {"stage": FieldChange("stage", "PROPOSAL", "CUSTOMER", 1)}
    verdict = evaluate_rule(Rule.model_validate(WON_RULE), event(record), changes)
    assert not verdict.matched
    assert [c.matched for c in verdict.blocks[0].criteria] == [True, False]


def test_trigger_on_edited_ignores_created_events() -> None:
    record = {"stage": "CUSTOMER", "amount": {"amountMicros": 1}}
    changes = {"stage": FieldChange("stage", None, "CUSTOMER", 1)}
    verdict = evaluate_rule(Rule.model_validate(WON_RULE), event(record, "created"), changes)
    assert not verdict.matched
    assert "trigger is on edited" in verdict.reason


def test_inactive_rules_never_match() -> None:
    rule = Rule.model_validate({**WON_RULE, "active": False})
    changes = {"stage": FieldChange("stage", "NEW", "CUSTOMER", 1)}
    verdict = evaluate_rule(rule, event({"stage": "CUSTOMER", "amount": {"amountMicros": 1}}), changes)
    assert not verdict.matched


def test_value_rules_without_transitions_are_keyed_by_the_event() -> None:
    rule = Rule.model_validate({**WON_RULE, "criteria": [{"field": "stage", "comparator": "equals",
                                                          "value": "CUSTOMER"}], "pattern": None})
    verdict = evaluate_rule(rule, event({"stage": "CUSTOMER"}), {})
    assert verdict.matched
    assert verdict.transition == "event:e1"


def test_watched_fields_limit_the_trigger() -> None:
    rule = Rule.model_validate({**WON_RULE, "trigger": {"on": "edited", "fields": ["stage"]},
                                "criteria": [], "pattern": None})
    assert not evaluate_rule(rule, event({"stage": "X"}, changed=["name"]), {}).matched
    assert evaluate_rule(rule, event({"stage": "X"}, changed=["stage"]), {}).matched


def test_stripe_invoice_shorthand_is_a_document_action_on_stripe() -> None:
    action = Rule.model_validate(WON_RULE).blocks[0].actions[0]
    assert (action.type, action.system) == ("invoice", "stripe")


# --- partial records (HubSpot: one property per event) ---------------------------------------------
def test_a_field_a_partial_record_does_not_carry_is_decided_after_lookup() -> None:
    from billflow.rules.engine import Clock

    rule = Rule.model_validate(WON_RULE)
    won = event({"id": "r1", "stage": "CUSTOMER"}, changed=["stage"])
    changes = {"stage": FieldChange("stage", "PROPOSAL", "CUSTOMER", 7)}

    whole = evaluate_rule(rule, won, changes)
    partial = evaluate_rule(rule, won, changes, clock=Clock(partial=True))

    assert not whole.matched  # a complete record without an amount: the criterion fails
    assert partial.matched and partial.needs_lookup and partial.transition == "stage@7"
    [block] = partial.blocks
    assert block.pending and "decided after Lookup" in block.criteria[1].reason
    # After Lookup the same criterion reads the fetched record: it holds or fails on HubSpot's value.
    held = {"0.1": True}
    fetched = {"id": "r1", "stage": "CUSTOMER", "amount": {"amountMicros": 0}}
    after = evaluate_rule(rule, won, {}, data=fetched, clock=Clock(partial=True, lookup={}, held=held))
    assert not after.matched
