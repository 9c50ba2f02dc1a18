"""Twenty in full (issue 11): created, updated and deleted webhooks of companies and people parse like the
opportunity's, with their own object, the record and the changed fields. Sample bodies in events/twenty/
are shaped as transform-event-to-webhook-event.ts builds them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from billflow.errors import InvalidRequest
from billflow.sources.twenty import ADAPTER

from tests.fakes.signing import twenty_event
from tests.fakes.twenty_server import FakeTwenty

NOW = datetime(2026, 3, 25, tzinfo=UTC)


def parse(body: dict[str, Any]) -> Any:
    [event] = ADAPTER.parse(tenant="demo", body=json.dumps(body).encode(), received_at=NOW)
    return event


@pytest.mark.parametrize(("sample", "obj", "action", "changed"), [
    ("company-created", "company", "created", None),
    ("company-updated", "company", "updated", ["address"]),
    ("person-updated", "person", "updated", ["jobTitle"]),
    ("person-deleted", "person", "deleted", None),
    ("opportunity-deleted", "opportunity", "deleted", None),
])
def test_company_person_and_deletion_events_parse(sample: str, obj: str, action: str, changed: Any) -> None:
    body = twenty_event(sample)
    event = parse(body)
    assert (event.object, event.action, event.changed_fields) == (obj, action, changed)
    assert event.record_id == body["record"]["id"] and event.record == body["record"]


@pytest.mark.parametrize("sample", ["company-created", "company-updated", "person-updated", "person-deleted",
                                    "opportunity-deleted"])
def test_the_samples_records_are_records_twenty_holds(sample: str) -> None:
    body = twenty_event(sample)
    problems = FakeTwenty().contract.response_schema_errors(body["objectMetadata"]["nameSingular"], body["record"])
    assert problems == []


def test_a_destroyed_record_is_a_deletion() -> None:
    body = twenty_event("company-updated")
    body["eventName"] = "company.destroyed"
    body.pop("updatedFields")
    assert parse(body).action == "deleted"


def test_a_custom_objects_event_keeps_its_name() -> None:
    body = twenty_event("company-created")
    body["eventName"] = "lineItem.created"
    body["objectMetadata"]["nameSingular"] = "lineItem"
    assert parse(body).object == "lineItem"


def test_an_unknown_verb_is_refused_with_its_name() -> None:
    body = twenty_event("company-created")
    body["eventName"] = "company.merged"
    with pytest.raises(InvalidRequest, match=r"company\.merged"):
        parse(body)
