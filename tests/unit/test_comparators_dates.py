"""before / after / on: ISO dates and date-times in records, absolute or relative values, the rule's zone."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from billflow.logic.validate import validate_rule
from billflow.models.events import CrmEvent
from billflow.models.rules import Rule
from billflow.rules import comparators
from billflow.rules.comparators import DATE_COMPARATORS, is_date_value
from billflow.rules.engine import Clock, evaluate_rule
from billflow.rules.paths import MISSING

PARIS = ZoneInfo("Europe/Paris")
TOKYO = ZoneInfo("Asia/Tokyo")
NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def holds(name: str, actual: Any, expected: Any, zone: Any = UTC, now: datetime = NOW) -> bool:
    return DATE_COMPARATORS[comparators.canonical(name)](actual, expected, zone, now)


@pytest.mark.parametrize(("name", "actual", "expected", "result"), [
    ("before", "2026-03-30", "2026-03-31", True),
    ("before", "2026-03-31", "2026-03-31", False),
    ("after", "2026-04-01", "2026-03-31", True),
    ("on", "2026-03-31", "2026-03-31", True),
    ("on", "2026-03-31T23:59:59Z", "2026-03-31", True),
    ("on_or_before", "2026-03-31", "2026-03-31", True),
    ("on_or_after", "2026-03-30", "2026-03-31", False),
    ("is_before", "2026-03-30", "2026-03-31", True),  # Zoho's spelling
    ("after", "2026-03-31T10:00:00Z", "2026-03-31T09:00:00Z", True),  # instants
    ("before", "2026-03-31T08:59:59.999Z", "2026-03-31T09:00:00Z", True),
])
def test_absolute_dates_and_instants(name: str, actual: str, expected: str, result: bool) -> None:
    assert holds(name, actual, expected) is result


def test_relative_days_count_calendar_days_in_the_rules_zone() -> None:
    assert holds("on", "2026-11-21", "today")
    assert holds("on", "2026-11-20", "yesterday") and holds("on", "2026-11-22", "tomorrow")
    assert holds("before", "2026-11-13", "-7d") and not holds("before", "2026-11-14", "-7d")
    assert holds("on", "2026-12-21", "+30d")
    assert holds("on", "2026-12-05", "+2w")
    # 23:30 UTC on the 21st is already the 22nd in Tokyo: "today" there is the 22nd.
    late = datetime(2026, 11, 21, 23, 30, tzinfo=UTC)
    assert holds("on", "2026-11-22", "today", TOKYO, late)
    assert holds("on", "2026-11-21", "today", UTC, late)


def test_a_date_time_field_is_seen_on_its_local_day() -> None:
    # Twenty stores a close date as a date-time; 23:30 UTC is the next day in Tokyo, the same day in UTC.
    field = "2026-03-31T23:30:00.000Z"
    assert holds("on", field, "2026-03-31", UTC)
    assert holds("on", field, "2026-04-01", TOKYO)
    assert holds("after", field, "2026-03-31", TOKYO) and not holds("after", field, "2026-03-31", UTC)


def test_values_without_an_offset_are_in_the_rules_zone() -> None:
    # 09:00 in Paris (summer time, UTC+2) is 07:00 UTC.
    assert holds("after", "2026-06-01T07:30:00Z", "2026-06-01T09:00", PARIS)
    assert not holds("after", "2026-06-01T06:30:00Z", "2026-06-01T09:00", PARIS)
    assert holds("before", "2026-06-01T08:00:00", "2026-06-01T09:00:00+02:00", PARIS)  # naive field: Paris too


def test_hours_and_minutes_are_instants_relative_to_now() -> None:
    assert holds("after", "2026-11-21T08:00:00Z", "-3h")
    assert not holds("after", "2026-11-21T06:00:00Z", "-3h")
    assert holds("before", "2026-11-21T11:00:00Z", "+90m")
    assert holds("on", "2026-11-21T00:00:01Z", "now")  # `on` an instant: the same local day


@pytest.mark.parametrize("actual", [None, MISSING, "", "soon", 12, True, {"a": 1}])
def test_what_is_not_a_date_never_matches(actual: Any) -> None:
    for name in DATE_COMPARATORS:
        assert not holds(name, actual, "2026-03-31")
    assert not holds("before", "2026-03-31", "next tuesday")


@pytest.mark.parametrize(("value", "ok"), [
    ("2026-03-31", True), ("2026-03-31T09:00", True), ("2026-03-31T09:00:00Z", True), ("today", True),
    ("Yesterday", True), ("now", True), ("-7d", True), ("+30d", True), ("+2w", True), ("-3h", True),
    ("+90m", True), ("31/03/2026", False), ("+3y", False), ("", False), (None, False), (7, False),
])
def test_the_values_a_rule_may_give(value: Any, ok: bool) -> None:
    assert is_date_value(value) is ok


def test_existing_comparators_are_unchanged() -> None:
    values = comparators.VALUE_COMPARATORS
    assert values["greater_than"]("10", 9) and values["between"](5, [1, 10]) and values["in"]("a", ["a"])
    assert comparators.is_known("before") and comparators.is_known("≥") and comparators.is_known("changed_to")
    assert comparators.is_date("is_on") and not comparators.is_date("equals")


RULE = {
    "id": "overdue", "source": "twenty", "object": "opportunity", "timezone": "Asia/Tokyo",
    "trigger": {"on": "edited"},
    "criteria": [{"field": "closeDate", "comparator": "before", "value": "today"}],
    "actions": [{"type": "notification", "options": {"message": "overdue"}}],
}


def event(record: dict[str, Any]) -> CrmEvent:
    at = datetime(2026, 11, 21, 23, 30, tzinfo=UTC)
    return CrmEvent(event_id="e1", tenant="acme", source="twenty", object="opportunity", action="updated",
                    record_id="r1", record=record, occurred_at=at, received_at=at)


def test_the_engine_reads_dates_in_the_rules_time_zone() -> None:
    rule = Rule.model_validate(RULE)
    now = datetime(2026, 11, 21, 23, 30, tzinfo=UTC)  # the 22nd in Tokyo
    record = {"closeDate": "2026-11-21T12:00:00.000Z"}  # the 21st in Tokyo: before "today" there
    assert evaluate_rule(rule, event(record), {}, clock=Clock.for_rule(rule, now=now)).matched
    utc_rule = rule.model_copy(update={"timezone": "UTC"})
    assert not evaluate_rule(utc_rule, event(record), {}, clock=Clock.for_rule(utc_rule, now=now)).matched


def test_validation_rejects_a_date_comparator_without_a_date_and_an_unknown_zone() -> None:
    bad_value = {**RULE, "criteria": [{"field": "closeDate", "comparator": "after", "value": "someday"}]}
    _, problems = validate_rule(bad_value)
    assert [(p.field, "is not a date" in p.message) for p in problems] == [("blocks.0.criteria.0.value", True)]
    _, problems = validate_rule({**RULE, "timezone": "Mars/Olympus"})
    assert [p.field for p in problems] == ["timezone"]
    assert "unknown time zone 'Mars/Olympus'" in problems[0].message
