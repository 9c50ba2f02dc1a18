"""The filter's memory of the runs each delivery made: a redelivery of the same change, meeting the same rules
index, finds them; another change, another record or a new index does not; the oldest are forgotten first."""

from __future__ import annotations

from datetime import UTC, datetime

from billflow.logic.filter import RoutedDeliveries
from billflow.models.events import CrmEvent
from billflow.rules.index import RuleIndex

AT = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


def _delivery(event_id: str, record_id: str = "opp-1") -> CrmEvent:
    return CrmEvent(event_id=event_id, tenant="acme", source="twenty", object="opportunity", action="updated",
                    record_id=record_id, record={"id": record_id, "stage": "CUSTOMER"}, changed_fields=["stage"],
                    occurred_at=AT, received_at=AT)


def test_a_redelivery_meeting_the_same_index_finds_the_runs_of_the_first() -> None:
    routed, index = RoutedDeliveries(), RuleIndex([])
    routed.remember("rules", _delivery("e1"), index, ["won-abc"])

    assert routed.runs("rules", _delivery("e1"), index) == ("won-abc",)
    assert routed.runs("rules", _delivery("e2"), index) is None  # another change of the record
    assert routed.runs("rules", _delivery("e1", "opp-2"), index) is None  # another record
    assert routed.runs("other-rules", _delivery("e1"), index) is None  # another stack's table
    assert routed.runs("rules", _delivery("e1"), RuleIndex([])) is None  # the rules changed since: decide again


def test_the_oldest_deliveries_are_forgotten_first() -> None:
    routed, index = RoutedDeliveries(kept=2), RuleIndex([])
    for number in range(3):
        routed.remember("rules", _delivery(f"e{number}"), index, [f"run-{number}"])
    assert routed.runs("rules", _delivery("e0"), index) is None
    routed.remember("rules", _delivery("e1"), index, ["run-1"])  # seen again: now the newest
    routed.remember("rules", _delivery("e3"), index, ["run-3"])

    assert [routed.runs("rules", _delivery(f"e{n}"), index) for n in range(4)] == [None, ("run-1",), None, ("run-3",)]
    routed.clear()
    assert routed.runs("rules", _delivery("e3"), index) is None
