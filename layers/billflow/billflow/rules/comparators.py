"""Criterion comparators. Value comparators see the field's current value; transition comparators see
the change billflow observed for the field (None when the field did not change in this event); date
comparators see the field's value and the rule's clock (time zone and now).

Dates: before / after / on (and on_or_before / on_or_after) compare a record field holding an ISO date
("2026-03-31") or date-time ("2026-03-31T00:00:00.000Z") with a value that is
- an absolute date or date-time: "2026-03-31", "2026-03-31T09:00" (no offset: the rule's time zone);
- relative to now, in the rule's time zone: "today", "yesterday", "tomorrow", "-7d", "+30d", "+2w"
  (calendar days), or "now", "-3h", "+90m" (instants).
Against a day (absolute date, or relative in days or weeks) the field's own date in the rule's time zone is
compared; against an instant, the field's instant (a date-only field counts from its local midnight), with
`on` meaning the same local day.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from billflow.rules.paths import MISSING


@dataclass(frozen=True)
class FieldChange:
    path: str
    before: Any
    after: Any
    version: int


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None or value is MISSING:
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _text(value: Any) -> str:
    return "" if value is None or value is MISSING else str(value)


def _empty(value: Any) -> bool:
    return value is None or value is MISSING or value == "" or value == [] or value == {}


def _ordered(op: Callable[[Decimal, Decimal], bool]) -> Callable[[Any, Any], bool]:
    def compare(actual: Any, expected: Any) -> bool:
        a, e = _number(actual), _number(expected)
        return a is not None and e is not None and op(a, e)

    return compare


def _between(actual: Any, expected: Any) -> bool:
    if not isinstance(expected, list | tuple) or len(expected) != 2:
        return False
    a, low, high = _number(actual), _number(expected[0]), _number(expected[1])
    return a is not None and low is not None and high is not None and low <= a <= high


def _equals(actual: Any, expected: Any) -> bool:
    if actual is MISSING:
        return False
    if actual == expected:
        return True
    a, e = _number(actual), _number(expected)
    return a is not None and e is not None and a == e


VALUE_COMPARATORS: dict[str, Callable[[Any, Any], bool]] = {
    "equals": _equals,
    "not_equals": lambda a, e: not _equals(a, e),
    "contains": lambda a, e: _text(e).lower() in _text(a).lower() if not isinstance(a, list) else e in a,
    "not_contains": lambda a, e: not (
        _text(e).lower() in _text(a).lower() if not isinstance(a, list) else e in a
    ),
    "starts_with": lambda a, e: _text(a).lower().startswith(_text(e).lower()),
    "ends_with": lambda a, e: _text(a).lower().endswith(_text(e).lower()),
    "is_empty": lambda a, _e: _empty(a),
    "is_not_empty": lambda a, _e: not _empty(a),
    "greater_than": _ordered(lambda a, e: a > e),
    "greater_or_equal": _ordered(lambda a, e: a >= e),
    "less_than": _ordered(lambda a, e: a < e),
    "less_or_equal": _ordered(lambda a, e: a <= e),
    "between": _between,
    "in": lambda a, e: isinstance(e, list) and any(_equals(a, x) for x in e),
    "not_in": lambda a, e: isinstance(e, list) and not any(_equals(a, x) for x in e),
}

TRANSITION_COMPARATORS: dict[str, Callable[[FieldChange, Any], bool]] = {
    "changed": lambda change, _e: True,
    "changed_to": lambda change, e: _equals(change.after, e),
    "changed_from": lambda change, e: _equals(change.before, e),
}

# --- dates -------------------------------------------------------------------------------------------------
_RELATIVE = re.compile(r"^([+-])\s*(\d+)\s*([dwhm])$")
_DAY_WORDS = {"today": 0, "yesterday": -1, "tomorrow": 1}


@dataclass(frozen=True)
class Moment:
    """A value to compare dates with: a calendar day, or an instant (aware)."""

    day: date | None = None
    instant: datetime | None = None


def parse_moment(value: Any, zone: tzinfo, now: datetime) -> Moment | None:
    """A criterion's date value: absolute or relative to `now` in `zone`; None if it is not a date."""
    if isinstance(value, datetime):
        return Moment(instant=value if value.tzinfo else value.replace(tzinfo=zone))
    if isinstance(value, date):
        return Moment(day=value)
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    local_now = now.astimezone(zone)
    if text == "now":
        return Moment(instant=now)
    if text in _DAY_WORDS:
        return Moment(day=local_now.date() + timedelta(days=_DAY_WORDS[text]))
    relative = _RELATIVE.match(text)
    if relative:
        sign = -1 if relative.group(1) == "-" else 1
        amount, unit = int(relative.group(2)) * sign, relative.group(3)
        if unit in "dw":
            return Moment(day=local_now.date() + timedelta(days=amount * (7 if unit == "w" else 1)))
        return Moment(instant=now + timedelta(hours=amount) if unit == "h" else now + timedelta(minutes=amount))
    return _absolute(value.strip(), zone)


def _absolute(text: str, zone: tzinfo) -> Moment | None:
    if len(text) == 10:
        try:
            return Moment(day=date.fromisoformat(text))
        except ValueError:
            return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return Moment(instant=parsed if parsed.tzinfo else parsed.replace(tzinfo=zone))


def field_moment(value: Any, zone: tzinfo) -> Moment | None:
    """A record field's date: ISO date or date-time text (or a date/datetime); None when it is not one."""
    if isinstance(value, bool) or value is None or value is MISSING:
        return None
    if isinstance(value, datetime | date):
        return parse_moment(value, zone, datetime.now(zone))
    if isinstance(value, str) and value.strip():
        return _absolute(value.strip(), zone)
    return None


def local_day(moment: Moment, zone: tzinfo) -> date:
    if moment.day is not None:
        return moment.day
    assert moment.instant is not None
    return moment.instant.astimezone(zone).date()


def instant_of(moment: Moment, zone: tzinfo) -> datetime:
    if moment.instant is not None:
        return moment.instant
    assert moment.day is not None
    return datetime.combine(moment.day, time(0), tzinfo=zone)


DateComparator = Callable[[Any, Any, tzinfo, datetime], bool]


def _dated(op: Callable[[Any, Any], bool], by_day: bool = False) -> DateComparator:
    """A date comparator: by day when the expected value is a day (or `by_day`), else by instant."""

    def compare(actual: Any, expected: Any, zone: tzinfo, now: datetime) -> bool:
        a, e = field_moment(actual, zone), parse_moment(expected, zone, now)
        if a is None or e is None:
            return False
        if e.day is not None or by_day:
            return bool(op(local_day(a, zone), local_day(e, zone)))
        return bool(op(instant_of(a, zone), instant_of(e, zone)))

    return compare


DATE_COMPARATORS: dict[str, DateComparator] = {
    "before": _dated(lambda a, e: a < e),
    "after": _dated(lambda a, e: a > e),
    "on": _dated(lambda a, e: a == e, by_day=True),  # an instant: its local day
    "on_or_before": _dated(lambda a, e: a <= e),
    "on_or_after": _dated(lambda a, e: a >= e),
}


def is_date_value(value: Any) -> bool:
    """Whether a criterion value is a date these comparators understand (for rule validation)."""
    from datetime import UTC

    return parse_moment(value, UTC, datetime.now(UTC)) is not None


# The spellings admins know from Zoho Books and spreadsheets.
ALIASES = {
    "is": "equals", "=": "equals", "==": "equals", "eq": "equals",
    "is_not": "not_equals", "!=": "not_equals", "≠": "not_equals", "ne": "not_equals",
    ">": "greater_than", "gt": "greater_than", ">=": "greater_or_equal", "≥": "greater_or_equal",
    "<": "less_than", "lt": "less_than", "<=": "less_or_equal", "≤": "less_or_equal",
    "does_not_contain": "not_contains",
    "is_before": "before", "is_after": "after", "is_on": "on",
}

VALUELESS = frozenset({"is_empty", "is_not_empty", "changed"})


def canonical(name: str) -> str:
    return ALIASES.get(name, name)


def is_known(name: str) -> bool:
    name = canonical(name)
    return name in VALUE_COMPARATORS or name in TRANSITION_COMPARATORS or name in DATE_COMPARATORS


def is_date(name: str) -> bool:
    return canonical(name) in DATE_COMPARATORS


def is_transition(name: str) -> bool:
    return canonical(name) in TRANSITION_COMPARATORS
