"""The rule index: an event meets only the rules its changes can match, in the rules' order."""

from __future__ import annotations

from typing import Any

from billflow.models.rules import Rule
from billflow.rules.comparators import FieldChange
from billflow.rules.index import RuleIndex, required_change


def rule(rule_id: str, criteria: list[dict[str, Any]], pattern: str | None = None, order: int = 0) -> Rule:
    doc: dict[str, Any] = {"id": rule_id, "source": "twenty", "object": "opportunity", "order": order,
                           "trigger": {"type": "event", "on": "edited"}, "criteria": criteria,
                           "actions": [{"type": "webhook", "connection": "hook"}]}
    if pattern:
        doc["pattern"] = pattern
    return Rule.model_validate(doc)


def changed(path: str, before: Any, after: Any) -> dict[str, FieldChange]:
    return {path: FieldChange(path, before, after, 1)}


WON = {"field": "stage", "comparator": "changed_to", "value": "CUSTOMER"}
POSITIVE = {"field": "amount.amountMicros", "comparator": "greater_than", "value": 0}


def test_a_rule_needing_a_change_to_a_value_meets_only_events_making_it() -> None:
    index = RuleIndex([rule("won", [WON, POSITIVE], "1 AND 2")])
    assert [r.id for r in index.candidates(changed("stage", "PROPOSAL", "CUSTOMER"))] == ["won"]
    assert index.candidates(changed("stage", "NEW", "PROPOSAL")) == []
    assert index.candidates(changed("amount.amountMicros", 1, 2)) == []


def test_a_change_the_pattern_can_do_without_keeps_the_rule_a_candidate() -> None:
    either = rule("either", [WON, POSITIVE], "1 OR 2")
    values_only = rule("values", [POSITIVE])
    index = RuleIndex([either, values_only])
    assert [r.id for r in index.candidates({})] == ["either", "values"]
    assert required_change(either.blocks[0]) is None


def test_changed_from_and_changed_are_filed_under_their_field() -> None:
    left = rule("left", [{"field": "stage", "comparator": "changed_from", "value": "CUSTOMER"}])
    any_change = rule("any", [{"field": "closeDate", "comparator": "changed"}])
    index = RuleIndex([left, any_change])
    assert [r.id for r in index.candidates(changed("stage", "CUSTOMER", "LOST"))] == ["left"]
    assert index.candidates(changed("stage", "NEW", "LOST")) == []
    assert [r.id for r in index.candidates(changed("closeDate", None, "2026-01-01"))] == ["any"]


def test_candidates_keep_the_rules_order_across_fields_and_unindexed_rules() -> None:
    rules = [rule("a", [{"field": "closeDate", "comparator": "changed"}]), rule("b", [POSITIVE]),
             rule("c", [WON]), rule("d", [{"field": "name", "comparator": "changed"}])]
    changes = {**changed("stage", "NEW", "CUSTOMER"), **changed("closeDate", None, "2026-01-01")}
    assert [r.id for r in RuleIndex(rules).candidates(changes)] == ["a", "b", "c"]


def test_a_rule_with_several_blocks_is_a_candidate_when_any_block_may_match() -> None:
    doc = {"id": "blocks", "source": "twenty", "object": "opportunity", "trigger": {"type": "event", "on": "edited"},
           "blocks": [{"criteria": [WON], "actions": [{"type": "webhook", "connection": "hook"}]},
                      {"criteria": [{"field": "name", "comparator": "changed"}],
                       "actions": [{"type": "webhook", "connection": "hook"}]}]}
    index = RuleIndex([Rule.model_validate(doc)])
    assert [r.id for r in index.candidates(changed("name", "a", "b"))] == ["blocks"]
    assert [r.id for r in index.candidates(changed("stage", "NEW", "CUSTOMER"))] == ["blocks"]
    assert index.candidates(changed("amount", 1, 2)) == []


def counted_store(table: str) -> tuple[Any, list[str]]:
    """A rule store on a new table, and the list its Query calls are appended to."""
    from billflow.aws import client
    from billflow.storage.rules import RuleStore

    ddb = client("dynamodb")
    ddb.create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    )
    queries: list[str] = []
    ddb.meta.events.register("before-call.dynamodb.Query", lambda **_: queries.append("query"))
    return RuleStore(table), queries


def test_the_filter_reads_the_rules_again_only_after_a_rule_write(aws: None) -> None:
    from billflow.rules.index import indexed_rules

    store, queries = counted_store("rules-index-test")
    store.put(rule("won", [WON, POSITIVE], order=2).model_copy(update={"tenant": "acme"}))

    first = indexed_rules(store, "acme", "twenty", "opportunity")
    again = indexed_rules(store, "acme", "twenty", "opportunity")
    assert [r.id for r in again.rules] == ["won"] and again is first and len(queries) == 1

    store.put(rule("any-close", [{"field": "closeDate", "comparator": "changed"}], order=1)
              .model_copy(update={"tenant": "acme"}))
    after = indexed_rules(store, "acme", "twenty", "opportunity")
    assert [r.id for r in after.rules] == ["any-close", "won"] and len(queries) == 2
    store.delete(after.rules[1])
    assert [r.id for r in indexed_rules(store, "acme", "twenty", "opportunity").rules] == ["any-close"]


def test_an_object_no_rule_was_written_for_is_read_once_until_its_first_rule(aws: None) -> None:
    from billflow.rules.index import indexed_rules

    store, queries = counted_store("rules-empty-test")

    for _ in range(3):  # a person changed three times: nobody wrote a rule about people
        assert indexed_rules(store, "acme", "twenty", "person").rules == []
    assert len(queries) == 1

    store.put(rule("new-buyer", [{"field": "jobTitle", "comparator": "changed"}]).model_copy(
        update={"tenant": "acme", "object": "person"}))
    assert [r.id for r in indexed_rules(store, "acme", "twenty", "person").rules] == ["new-buyer"]
