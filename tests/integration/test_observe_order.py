"""Out-of-order and duplicated deliveries against the real record store on moto (tables from template.yaml).

Given a sequence of changes of one record, each delivered as Twenty delivers it (the record after the
change and the fields that changed), when its deliveries arrive in any order, any number of times, then
the filter decides the same transitions, so derives the same execution names, as for in-order delivery:
for a record billflow sees for the first time and for one it already knows.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import billflow.aws
import billflow.settings
import pytest
from billflow.aws import client
from billflow.logic.filter import match_rules
from billflow.models.events import CrmEvent
from billflow.models.rules import Rule
from billflow.storage import keys
from billflow.storage.execution_log import get_execution_log
from billflow.storage.records import get_record_store
from billflow.storage.rules import get_rule_store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from billflow_local.template import Template

ROOT = Path(__file__).resolve().parents[2]
TABLES = {"RulesTable": "RULES_TABLE", "RecordsTable": "RECORDS_TABLE", "ExecutionLogTable": "EXECUTION_LOG_TABLE"}
T0 = datetime(2026, 3, 18, 9, 0, tzinfo=UTC)
STAGES = ["NEW", "PROPOSAL", "CUSTOMER"]
AMOUNTS = [0, 5_000_000, 12_500_000_000]
NAMES = ["Deal", "Deal (renamed)", "Big deal"]
FIELDS = {"stage": STAGES, "amount": AMOUNTS, "name": NAMES}


def _rule(rule_id: str, criteria: list[dict[str, Any]], pattern: str | None = None) -> Rule:
    return Rule.model_validate({
        "id": rule_id, "tenant": "acme", "source": "twenty", "object": "opportunity",
        "trigger": {"type": "event", "on": "created_or_edited", "when": "every_edit"},
        "criteria": criteria, **({"pattern": pattern} if pattern else {}),
        "actions": [{"type": "notification", "options": {"message": "x"}}],
    })


RULES = [
    _rule("won", [{"field": "stage", "comparator": "changed_to", "value": "CUSTOMER"},
                  {"field": "amount.amountMicros", "comparator": "greater_than", "value": 0}]),
    _rule("amount-edited", [{"field": "amount.amountMicros", "comparator": "changed"}]),
    _rule("renamed-or-proposal", [{"field": "name", "comparator": "changed"},
                                  {"field": "stage", "comparator": "changed_to", "value": "PROPOSAL"}], "1 OR 2"),
    _rule("is-customer", [{"field": "stage", "comparator": "is", "value": "CUSTOMER"}]),  # no transition
]


@pytest.fixture(scope="module")
def tables() -> Iterator[None]:
    template = Template.load(ROOT / "template.yaml")
    patch = pytest.MonkeyPatch()
    for name, value in {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing",
                        **{variable: f"test-{logical}" for logical, variable in TABLES.items()}}.items():
        patch.setenv(name, value)
    billflow.settings.get_settings.cache_clear()
    billflow.aws.reset_clients()
    with mock_aws():
        for logical in TABLES:
            props = template.resolve(template.properties(logical))
            client("dynamodb").create_table(
                TableName=f"test-{logical}", AttributeDefinitions=props["AttributeDefinitions"],
                KeySchema=props["KeySchema"], BillingMode="PAY_PER_REQUEST",
                **({"GlobalSecondaryIndexes": props["GlobalSecondaryIndexes"]}
                   if props.get("GlobalSecondaryIndexes") else {}),
            )
        yield
    patch.undo()
    billflow.settings.get_settings.cache_clear()
    billflow.aws.reset_clients()


def twenty_event(record_id: str, record: dict[str, Any], changed: list[str] | None, at: datetime,
                 action: str = "updated") -> CrmEvent:
    body = {"id": record_id, "stage": record["stage"], "name": record["name"],
            "amount": {"amountMicros": record["amount"], "currencyCode": "USD"}}
    return CrmEvent(
        event_id=f"twenty-{uuid.uuid4().hex}", tenant="acme", source="twenty", object="opportunity",
        action=action, record_id=record_id, record=body, changed_fields=changed,  # type: ignore[arg-type]
        occurred_at=at, received_at=at,
    )


def fired_names(events: list[CrmEvent]) -> set[str]:
    """Deliver the events through the filter's matching, in this order: the execution names it derives."""
    names: set[str] = set()
    for event in events:
        _, verdicts = match_rules(event, get_rule_store(), get_record_store(), RULES)
        record_key = keys.record_pk(event.tenant, event.source, event.object, event.record_id)
        for verdict in verdicts:
            if verdict.matched:
                key = keys.execution_key(event.tenant, verdict.rule.id, record_key, verdict.transition)
                names.add(keys.execution_name(verdict.rule.id, key))
    return names


@st.composite
def histories(draw: st.DrawFn) -> tuple[dict[str, Any], list[tuple[dict[str, str], list[str]]], bool]:
    """A starting record, then 1-5 changes (each: new values of 1-3 fields, every one a real change)."""
    start = {name: draw(st.sampled_from(values)) for name, values in FIELDS.items()}
    changes = []
    current = dict(start)
    for _ in range(draw(st.integers(1, 5))):
        fields = draw(st.lists(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=3, unique=True))
        update = {f: draw(st.sampled_from([v for v in FIELDS[f] if v != current[f]])) for f in fields}
        current.update(update)
        changes.append((dict(current), sorted(fields)))
    return start, changes, draw(st.booleans())


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
@given(history=histories(), data=st.data())
def test_any_order_and_duplication_fires_what_in_order_delivery_fires(
    tables: None, history: tuple[dict[str, Any], list[tuple[dict[str, Any], list[str]]], bool], data: st.DataObject,
) -> None:
    start, changes, known = history
    first_created = data.draw(st.booleans(), label="first change is the record's creation")

    def deliveries(record_id: str) -> tuple[list[CrmEvent], list[CrmEvent]]:
        baseline = [twenty_event(record_id, start, ["name"], T0 - timedelta(days=1))] if known else []
        sequence = [
            twenty_event(record_id, record, None if (i == 0 and first_created and not known) else fields,
                         T0 + timedelta(minutes=i + 1),
                         "created" if (i == 0 and first_created and not known) else "updated")
            for i, (record, fields) in enumerate(changes)
        ]
        return baseline, sequence

    # In order first; then billflow forgets the record, and the same deliveries come shuffled and repeated.
    record_id = str(uuid.uuid4())
    baseline, sequence = deliveries(record_id)
    expected = fired_names(baseline + sequence)
    forget(record_id)
    order = data.draw(st.permutations(range(len(sequence))), label="order")
    shuffled = [sequence[i] for i in order]
    for i in data.draw(st.lists(st.integers(0, len(sequence) - 1), max_size=4), label="duplicates"):
        shuffled.insert(data.draw(st.integers(0, len(shuffled)), label="at"), sequence[i])

    assert fired_names(baseline + shuffled) == expected


def forget(record_id: str) -> None:
    pk = keys.record_pk("acme", "twenty", "opportunity", record_id)
    client("dynamodb").delete_item(TableName="test-RecordsTable", Key={"pk": {"S": pk}})


def won_names(events: list[CrmEvent]) -> list[str]:
    names = []
    for event in events:
        _, verdicts = match_rules(event, get_rule_store(), get_record_store(), RULES)
        names += [f"{v.rule.id}:{v.transition}" for v in verdicts if v.matched and v.rule.id == "won"]
    return names


def test_a_first_seen_deal_whose_amount_edit_arrives_before_its_won_change_is_still_won(tables: None) -> None:
    record_id = str(uuid.uuid4())
    won = twenty_event(record_id, {"stage": "CUSTOMER", "amount": 5_000_000, "name": "Deal"}, ["stage"],
                       T0 + timedelta(minutes=1))
    edited = twenty_event(record_id, {"stage": "CUSTOMER", "amount": 7_000_000, "name": "Deal"}, ["amount"],
                          T0 + timedelta(minutes=2))

    fired = won_names([edited, won, edited, won])

    version = int(won.occurred_at.timestamp() * 1000)
    assert fired == [f"won:stage@{version}", f"won:stage@{version}"]  # the redelivery derives the same name


def test_an_older_event_never_rolls_a_field_back(tables: None) -> None:
    record_id = str(uuid.uuid4())
    proposal = twenty_event(record_id, {"stage": "PROPOSAL", "amount": 5, "name": "Deal"}, ["stage"],
                            T0 + timedelta(minutes=1))
    won = twenty_event(record_id, {"stage": "CUSTOMER", "amount": 5, "name": "Deal"}, ["stage"],
                       T0 + timedelta(minutes=2))
    won_names([won, proposal])
    state = get_record_store().get(keys.record_pk("acme", "twenty", "opportunity", record_id))
    assert state.fields["stage"][-1].value == "CUSTOMER"  # the newest stays the newest
    # A later edit that does not touch the stage sees it unchanged: nothing fires.
    renamed = twenty_event(record_id, {"stage": "CUSTOMER", "amount": 5, "name": "New"}, ["name"],
                           T0 + timedelta(minutes=3))
    assert won_names([renamed]) == []


def test_a_first_seen_record_that_does_not_say_what_changed_is_logged_as_skipped(tables: None) -> None:
    record_id = str(uuid.uuid4())
    silent = twenty_event(record_id, {"stage": "CUSTOMER", "amount": 5, "name": "Deal"}, None, T0)

    assert won_names([silent, silent]) == []

    record_key = keys.record_pk("acme", "twenty", "opportunity", record_id)
    entries = get_execution_log().by_record(record_key)
    # One entry per rule with a transition (not "is-customer"), once though the event came twice.
    assert sorted((e["rule_id"], e["status"]) for e in entries) == [
        ("amount-edited", "skipped"), ("renamed-or-proposal", "skipped"), ("won", "skipped")]
    [won] = [e for e in entries if e["rule_id"] == "won"]
    assert "does not say what changed" in str(won["reason"]) and "'CUSTOMER'" in str(won["reason"])


def test_an_edit_showing_an_unannounced_change_is_logged_and_the_late_change_still_fires(tables: None) -> None:
    record_id = str(uuid.uuid4())
    known = twenty_event(record_id, {"stage": "PROPOSAL", "amount": 5, "name": "Deal"}, ["name"], T0)
    won = twenty_event(record_id, {"stage": "CUSTOMER", "amount": 5, "name": "Deal"}, ["stage"],
                       T0 + timedelta(minutes=1))
    edited = twenty_event(record_id, {"stage": "CUSTOMER", "amount": 9, "name": "Deal"}, ["amount"],
                          T0 + timedelta(minutes=2))

    assert won_names([known, edited]) == []
    record_key = keys.record_pk("acme", "twenty", "opportunity", record_id)
    [entry] = [e for e in get_execution_log().by_record(record_key) if e["rule_id"] == "won"]
    assert entry["status"] == "skipped" and "no delivery received so far announces" in str(entry["reason"])
    assert won_names([won]) == [f"won:stage@{int(won.occurred_at.timestamp() * 1000)}"]


def test_state_written_before_per_field_history_still_recognises_its_redelivery(tables: None) -> None:
    record_id = str(uuid.uuid4())
    pk = keys.record_pk("acme", "twenty", "opportunity", record_id)
    won = twenty_event(record_id, {"stage": "CUSTOMER", "amount": 5, "name": "Deal"}, ["stage"], T0)
    legacy = {"values": {"stage": "CUSTOMER", "amount.amountMicros": 5}, "previous": {"stage": "PROPOSAL"},
              "versions": {"stage": 3, "amount.amountMicros": 0}, "causes": {"stage": won.event_id},
              "fired": [], "last_occurred_at": T0.isoformat()}
    client("dynamodb").put_item(TableName="test-RecordsTable", Item={
        "pk": {"S": pk}, "revision": {"N": "4"}, "state": {"S": json.dumps(legacy)}})

    assert won_names([won]) == ["won:stage@3"]


def test_long_values_are_remembered_by_digest_so_the_record_state_stays_small(tables: None) -> None:
    record_id = str(uuid.uuid4())
    events = [twenty_event(record_id, {"stage": "NEW", "amount": 5, "name": f"{i}" + "x" * 200_000}, ["name"],
                           T0 + timedelta(minutes=i)) for i in range(15)]
    for event in events:
        match_rules(event, get_rule_store(), get_record_store(), RULES)  # 15 x 200 KB would not fit in an item
    state = get_record_store().get(keys.record_pk("acme", "twenty", "opportunity", record_id))
    assert len(state.fields["name"]) == 12 and all(set(o.value) == {"sha256"} for o in state.fields["name"])


def test_an_edit_of_fields_no_rule_watches_writes_no_record_state(tables: None) -> None:
    record_id = str(uuid.uuid4())
    pk = keys.record_pk("acme", "twenty", "opportunity", record_id)
    proposal = twenty_event(record_id, {"stage": "PROPOSAL", "amount": 5, "name": "Deal"}, ["stage"], T0)
    won_names([proposal])
    revision = get_record_store().get(pk).revision
    # Twenty announces a field no rule reads; the watched ones are as remembered: nothing to write.
    edited = twenty_event(record_id, {"stage": "PROPOSAL", "amount": 5, "name": "Deal"}, ["closeDate"],
                          T0 + timedelta(minutes=1))

    assert won_names([edited, edited]) == []
    assert get_record_store().get(pk).revision == revision

    won = twenty_event(record_id, {"stage": "CUSTOMER", "amount": 5, "name": "Deal"}, ["stage"],
                       T0 + timedelta(minutes=2))
    _, verdicts = match_rules(won, get_rule_store(), get_record_store(), RULES)
    [matched] = [v for v in verdicts if v.matched and v.rule.id == "won"]
    assert matched.transition == f"stage@{int(won.occurred_at.timestamp() * 1000)}"
    assert get_record_store().get(pk).fields["stage"][-2].value == "PROPOSAL"  # the change's before value
