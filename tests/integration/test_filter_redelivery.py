"""A CRM that retries a delivery: the filter's container starts the run once and, having seen Step Functions
hold its name, reads neither the record's state, nor the tenant's settings, nor calls StartExecution again for
the retries, as long as the rules are the ones the first delivery met."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import billflow.aws
from billflow.aws import client
from billflow.logic.filter import route_event
from billflow.models.events import CrmEvent
from billflow.models.rules import Rule
from billflow.storage import keys
from billflow.storage.records import get_record_store
from billflow.storage.rules import get_rule_store

from tests.integration.conftest import AdminStack

AT = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


def _counting(calls: Counter[str]) -> None:
    def started(**_: Any) -> None:
        calls["StartExecution"] += 1

    def read(params: dict[str, Any], **_: Any) -> None:
        calls[params["Key"]["pk"]["S"]] += 1

    client("stepfunctions").meta.events.register("provide-client-params.sfn.StartExecution", started)
    client("dynamodb").meta.events.register("provide-client-params.dynamodb.GetItem", read)


def _won_rule(rule_id: str = "won") -> Rule:
    return Rule.model_validate({
        "id": rule_id, "tenant": "acme", "source": "twenty", "object": "opportunity",
        "trigger": {"type": "event", "on": "created_or_edited", "when": "every_edit"},
        "criteria": [{"field": "stage", "comparator": "changed_to", "value": "CUSTOMER"}],
        "actions": [{"type": "notification", "options": {"message": "won"}}],
    })


def test_a_retried_delivery_is_started_once_and_reads_the_record_and_the_settings_once() -> None:
    with AdminStack():
        get_rule_store().put(_won_rule())
        event = CrmEvent(
            event_id="twenty-retried", tenant="acme", source="twenty", object="opportunity", action="updated",
            record_id="opp-1", record={"id": "opp-1", "stage": "CUSTOMER"}, changed_fields=["stage"],
            occurred_at=AT, received_at=AT,
        )
        calls: Counter[str] = Counter()
        _counting(calls)

        first, *retries = [route_event(event, get_rule_store(), get_record_store()) for _ in range(4)]

        assert len(first.started) == 1
        assert [r.duplicates for r in retries] == [first.started] * 3
        assert calls["StartExecution"] == 1
        assert calls[keys.settings_pk("acme")] == 1
        record = keys.record_pk("acme", "twenty", "opportunity", "opp-1")
        assert calls[record] == 1  # the retries met the same rules: the same runs, already held

        # New rules (a new version token): the retry is decided from the stored record state again, and the
        # new rule's run starts; the first rule's is still a duplicate.
        get_rule_store().put(_won_rule("won-too"))
        calls.clear()
        again = route_event(event, get_rule_store(), get_record_store())
        assert calls[record] == 1 and calls["StartExecution"] == 1
        assert [n.split("-")[0:2] for n in again.started] == [["won", "too"]] and again.duplicates == first.started

        # Another endpoint is another Step Functions: what this container saw there is not taken for it.
        billflow.aws.reset_clients()
        calls.clear()
        _counting(calls)
        elsewhere = route_event(event, get_rule_store(), get_record_store())
        # Asked again for both: Step Functions answers a running execution's own name and input as started and
        # refuses a finished one's (moto does the same), so which list a name lands in depends on the runs.
        assert calls["StartExecution"] == 2
        assert sorted(elsewhere.started + elsewhere.duplicates) == sorted(first.started + again.started)
