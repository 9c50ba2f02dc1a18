"""A CRM that retries a delivery: the filter's container starts the run once and, having seen Step Functions
hold its name, neither reads the tenant's settings nor calls StartExecution again for the retries."""

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


def test_a_retried_delivery_is_started_once_and_reads_the_settings_once() -> None:
    with AdminStack():
        get_rule_store().put(Rule.model_validate({
            "id": "won", "tenant": "acme", "source": "twenty", "object": "opportunity",
            "trigger": {"type": "event", "on": "created_or_edited", "when": "every_edit"},
            "criteria": [{"field": "stage", "comparator": "changed_to", "value": "CUSTOMER"}],
            "actions": [{"type": "notification", "options": {"message": "won"}}],
        }))
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
        # Every retry is still decided from the stored record state (never from memory alone).
        assert calls[keys.record_pk("acme", "twenty", "opportunity", "opp-1")] == 4

        # Another endpoint is another Step Functions: what this container saw there is not taken for it.
        billflow.aws.reset_clients()
        calls.clear()
        _counting(calls)
        route_event(event, get_rule_store(), get_record_store())
        assert calls["StartExecution"] == 1
