"""Condition blocks: in order, first match or every match, up to 10 of 10 criteria; criteria on the looked-up
company decided after Lookup (three-valued at the filter, then decide() in the run)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from billflow.logic.filter import build_run_state
from billflow.logic.run import decide, plan_next
from billflow.logic.validate import validate_rule
from billflow.models.events import CrmEvent
from billflow.models.rules import Rule
from billflow.models.run import RunState
from billflow.rules.comparators import FieldChange
from billflow.rules.engine import Clock, evaluate_rule, kleene
from billflow.rules.pattern import parse_pattern
from pydantic import ValidationError

AT = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
WON = {"stage": FieldChange("stage", "PROPOSAL", "CUSTOMER", 2)}


def note(text: str) -> dict[str, Any]:
    return {"type": "notification", "options": {"message": text}}


def rule(**fields: Any) -> Rule:
    base: dict[str, Any] = {"id": "tiers", "source": "twenty", "object": "opportunity",
                            "trigger": {"on": "edited"}}
    return Rule.model_validate({**base, **fields})


TIERS = [
    {"criteria": [{"field": "stage", "comparator": "changed_to", "value": "CUSTOMER"},
                  {"field": "amount.amountMicros", "comparator": ">=", "value": 1_000_000_000}],
     "actions": [note("big")]},
    {"criteria": [{"field": "stage", "comparator": "changed_to", "value": "CUSTOMER"}],
     "actions": [note("any")]},
]


def event(record: dict[str, Any], source: str = "twenty") -> CrmEvent:
    return CrmEvent(event_id="e1", tenant="acme", source=source, object="opportunity", action="updated",
                    record_id="r1", record=record, changed_fields=["stage"], occurred_at=AT, received_at=AT)


def messages(actions: list[Any]) -> list[str]:
    return [a.options["message"] for a in actions]


def test_blocks_match_first_by_default_and_every_when_the_rule_says_so() -> None:
    big = event({"stage": "CUSTOMER", "amount": {"amountMicros": 2_000_000_000}})
    first = evaluate_rule(rule(blocks=TIERS), big, WON)
    assert (first.matched, first.selected) == (True, [0])
    assert [b.index for b in first.blocks] == [0]  # the first match ends the evaluation
    every = evaluate_rule(rule(blocks=TIERS, blocks_match="every"), big, WON)
    assert every.selected == [0, 1]
    small = evaluate_rule(rule(blocks=TIERS), event({"stage": "CUSTOMER", "amount": {"amountMicros": 5}}), WON)
    assert small.selected == [1]  # blocks in order: the first one that holds
    state = build_run_state(big, every, {})
    assert messages(state.actions) == ["big", "any"]
    assert messages(build_run_state(big, first, {}).actions) == ["big"]


def test_the_model_says_what_blocks_match_means() -> None:
    description = Rule.model_json_schema()["properties"]["blocks_match"]["description"]
    assert "first" in description and "every" in description and "default" in description
    assert rule(blocks=TIERS).blocks_match == "first"
    with pytest.raises(ValidationError):
        rule(blocks=TIERS, blocks_match="some")


def test_at_most_ten_blocks_of_ten_criteria() -> None:
    criterion = {"field": "name", "comparator": "is_not_empty"}
    ten = [{"criteria": [criterion] * 10, "actions": [note("x")]}] * 10
    assert len(rule(blocks=ten).blocks) == 10
    with pytest.raises(ValidationError, match="at most 10"):
        rule(blocks=[*ten, ten[0]])
    with pytest.raises(ValidationError, match="at most 10"):
        rule(blocks=[{"criteria": [criterion] * 11, "actions": [note("x")]}])


def test_three_valued_patterns_leave_only_what_the_lookup_can_change_undecided() -> None:
    truth = {1: True, 2: False, 3: None}.get
    assert kleene(parse_pattern("1 AND 3", 3), truth) is None
    assert kleene(parse_pattern("2 AND 3", 3), truth) is False
    assert kleene(parse_pattern("1 OR 3", 3), truth) is True
    assert kleene(parse_pattern("(2 OR 3) AND NOT 2", 3), truth) is None
    assert kleene(parse_pattern("NOT (2 AND 3)", 3), truth) is True


COUNTRY = {"field": "company.address.addressCountry", "comparator": "is", "value": "France"}
FRENCH = [
    {"criteria": [TIERS[1]["criteria"][0], COUNTRY], "actions": [note("france")]},
    {"criteria": [TIERS[1]["criteria"][0]], "actions": [note("elsewhere")]},
]


def test_company_criteria_wait_for_lookup_and_keep_later_blocks_as_candidates() -> None:
    verdict = evaluate_rule(rule(blocks=FRENCH), event({"stage": "CUSTOMER"}), WON)
    assert verdict.matched and verdict.needs_lookup
    assert verdict.selected == [0, 1]  # block 1 may hold; block 2 surely does: the run decides between them
    assert verdict.blocks[0].pending and verdict.blocks[0].criteria[1].pending
    assert verdict.transition == "stage@2"  # the execution's name does not depend on the lookup
    # A block whose record criteria already fail is decided: no lookup is needed.
    lost = evaluate_rule(rule(blocks=FRENCH[:1]), event({"stage": "NEW"}), {})
    assert not lost.matched and not lost.needs_lookup


def test_a_source_without_lookup_reads_company_criteria_from_the_record() -> None:
    r = rule(blocks=FRENCH[:1])
    record = {"stage": "CUSTOMER", "company": {"address": {"addressCountry": "France"}}}
    verdict = evaluate_rule(r, event(record, "generic"), WON, clock=Clock.for_rule(r, lookup={}))
    assert verdict.matched and not verdict.needs_lookup


def decided(r: Rule, record: dict[str, Any], company: dict[str, Any] | None) -> dict[str, Any]:
    verdict = evaluate_rule(r, event(record), WON)
    state = build_run_state(event(record), verdict, {})
    assert state.recheck
    assert plan_next(state) == {"done": False, "decide": True}
    return decide(state.model_copy(update={"lookup": {"company": company, "contact": None}}))


def test_decide_picks_the_first_block_that_holds_once_the_company_is_known() -> None:
    r = rule(blocks=FRENCH)
    french = decided(r, {"stage": "CUSTOMER"}, {"name": "Acme SA", "address": {"addressCountry": "France"}})
    assert french["decision"] == {"matched": True, "blocks": [0]}
    assert [a["options"]["message"] for a in french["actions"]] == ["france"]
    assert french["recheck"] is False
    german = decided(r, {"stage": "CUSTOMER"}, {"name": "Acme GmbH", "address": {"addressCountry": "Germany"}})
    assert german["decision"]["blocks"] == [1]
    assert [a["options"]["message"] for a in german["actions"]] == ["elsewhere"]
    # The run goes on from the decided document: its next step is the chosen action.
    step = plan_next(RunState.model_validate(german))
    assert step["action"]["options"]["message"] == "elsewhere"


def test_decide_ends_the_run_quietly_when_no_block_holds() -> None:
    answer = decided(rule(blocks=FRENCH[:1]), {"stage": "CUSTOMER"}, {"address": {"addressCountry": "Spain"}})
    assert answer["decision"]["matched"] is False
    item = answer["decision"]["log_item"]
    assert item["status"] == {"S": "not_matched"} and item["step"] == {"S": "run"}
    assert "company.address.addressCountry is 'Spain'" in item["reason"]["S"]
    nobody = decided(rule(blocks=FRENCH[:1]), {"stage": "CUSTOMER"}, None)  # no company at all
    assert nobody["decision"]["matched"] is False


def test_decide_keeps_the_filters_answer_for_transitions() -> None:
    # The event's change is gone after Lookup; the filter's answer rides along in `held`.
    r = rule(blocks=FRENCH[:1])
    verdict = evaluate_rule(r, event({"stage": "CUSTOMER"}), WON)
    state = build_run_state(event({"stage": "CUSTOMER"}), verdict, {})
    assert state.held == {"0.1": True}
    answer = decide(state.model_copy(update={"lookup": {"company": {"address": {"addressCountry": "France"}}}}))
    assert answer["decision"]["matched"] is True


def test_validation_of_blocks_and_lookup_criteria() -> None:
    base = {"id": "x", "source": "twenty", "object": "opportunity"}
    _, problems = validate_rule({**base, "blocks": [{"criteria": [], "actions": []}]})
    assert [p.field for p in problems] == ["blocks.0.actions"]
    changed_company = {"field": "company.name", "comparator": "changed", "value": None}
    _, problems = validate_rule({**base, "criteria": [changed_company], "actions": [note("x")]})
    assert [p.field for p in problems] == ["blocks.0.criteria.0.comparator"]
    assert "changes of the record only" in problems[0].message
    _, problems = validate_rule({**base, "criteria": [COUNTRY], "actions": [note("x")]})
    assert problems == []
    assert Rule.model_validate({**base, "criteria": [COUNTRY, {"field": "stage", "comparator": "is",
                                                               "value": "X"}],
                                "actions": [note("x")]}).watched_paths() == {"stage"}
