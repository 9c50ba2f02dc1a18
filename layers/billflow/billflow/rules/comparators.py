"""Criterion comparators. Value comparators see the field's current value; transition comparators see
the change billflow observed for the field (None when the field did not change in this event)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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

# The spellings admins know from Zoho Books and spreadsheets.
ALIASES = {
    "is": "equals", "=": "equals", "==": "equals", "eq": "equals",
    "is_not": "not_equals", "!=": "not_equals", "≠": "not_equals", "ne": "not_equals",
    ">": "greater_than", "gt": "greater_than", ">=": "greater_or_equal", "≥": "greater_or_equal",
    "<": "less_than", "lt": "less_than", "<=": "less_or_equal", "≤": "less_or_equal",
    "does_not_contain": "not_contains",
}

VALUELESS = frozenset({"is_empty", "is_not_empty", "changed"})


def canonical(name: str) -> str:
    return ALIASES.get(name, name)


def is_known(name: str) -> bool:
    name = canonical(name)
    return name in VALUE_COMPARATORS or name in TRANSITION_COMPARATORS


def is_transition(name: str) -> bool:
    return canonical(name) in TRANSITION_COMPARATORS
