"""Twenty's list parameters (filter, order_by, starting_after / ending_before, limit) as its REST API reads
them, for the stand-in's GET /rest/{plural}.

Parsed as Twenty's own parsers do (packages/twenty-server/src/engine/api/rest/input-request-parsers:
parse-filter, parse-base-filter, parse-filter-content, format-field-values, parse-order-by): a filter is
`field[comparator]:value` or `and(...)`, `or(...)`, `not(...)` of them, a top level without conjunction is
an `and`; values in double or single quotes lose them; `in` and `containsAny` take `[v1,v2]` (split at every
comma); `is` takes NULL or NOT_NULL; composite sub-fields are dotted (`amount.amountMicros`). Fields are
checked against the object's schema and enum values against the field's enum, as Twenty checks them against
its metadata (an unknown field is a 400). order_by is `field[Direction],field2` with AscNullsFirst the default
and id added last (Twenty's addDefaultOrderById), so pages are stable.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

COMPARATORS = frozenset({
    "eq", "neq", "in", "containsAny", "is", "gt", "gte", "lt", "lte", "startsWith", "endsWith", "like", "ilike",
})
DIRECTIONS = frozenset({"AscNullsFirst", "AscNullsLast", "DescNullsFirst", "DescNullsLast"})
_CONJUNCTION = re.compile(r"^(and|or|not)\((.+)\)$", re.DOTALL)
_BASE = re.compile(r"^(.+)\[(.+)\]:(.+)$", re.DOTALL)
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})?)?$")


class QueryError(ValueError):
    """What Twenty answers 400 for."""


@dataclass(frozen=True)
class Condition:
    path: tuple[str, ...]
    comparator: str
    value: Any  # str, or list[str] for in / containsAny


@dataclass(frozen=True)
class Junction:
    kind: str  # and, or, not
    parts: tuple[Node, ...]


Node = Condition | Junction
FieldSchema = Callable[[tuple[str, ...]], Mapping[str, Any] | None]


# --- filter ----------------------------------------------------------------------------------------
def parse_filter(text: str, field_schema: FieldSchema) -> Node:
    """The filter tree; QueryError with Twenty's kind of message for what Twenty refuses."""
    if not _CONJUNCTION.match(text):
        text = f"and({text})"
    node = _parse(text)
    _check(node, field_schema)
    return node


def _parse(text: str) -> Node:
    match = _CONJUNCTION.match(text)
    if match:
        kind = match.group(1)
        parts = tuple(_parse(part) for part in _split(text))
        if kind == "not" and len(parts) > 1:
            raise QueryError(
                "'filter' invalid. 'not' conjunction should contain only 1 condition. eg: not(field[eq]:1)")
        return Junction(kind, parts)
    base = _BASE.match(text)
    if not base:
        raise QueryError(f"'filter' invalid for '{text}'. eg: price[gte]:10")
    # Twenty reads the field up to the first "[", the comparator up to the next "]", the value after ":".
    field, _, rest = text.partition("[")
    comparator, _, value = rest.partition("]")
    value = value[1:] if value.startswith(":") else value
    if comparator not in COMPARATORS:
        raise QueryError(
            f"'filter' invalid for '{text}', comparator {comparator} not in {', '.join(sorted(COMPARATORS))}")
    return Condition(tuple(field.split(".")), comparator, _value(value, comparator))


def _split(text: str) -> list[str]:
    """parse-filter-content: the top-level parts inside a conjunction's parentheses."""
    in_brackets = in_double = in_single = False
    depth = 0
    parts: list[str] = []
    current = ""
    for c in text:
        keep = depth >= 1
        if c == "(":
            depth += 1
        if c == ")":
            depth -= 1
            keep = depth >= 1
        if c in "[]":
            in_brackets = not in_brackets
        if c == '"':
            in_double = not in_double
        if c == "'":
            in_single = not in_single
        if c == "," and depth == 1 and not (in_brackets or in_double or in_single):
            parts.append(current)
            current = ""
            keep = False
        if keep:
            current += c
    parts.append(current)
    return parts


def _value(raw: str, comparator: str) -> Any:
    if comparator in ("in", "containsAny"):
        if not (raw.startswith("[") and raw.endswith("]")):
            raise QueryError(
                f"'filter' invalid for '{comparator}' operator. Received '{raw}' but array value expected "
                f"eg: 'field[{comparator}]:[value_1,value_2]'")
        return [_unquote(item) for item in raw[1:-1].split(",")]
    if comparator == "is":
        return raw
    return _unquote(raw)


def _unquote(raw: str) -> str:
    if len(raw) >= 2 and raw[0] in "\"'" and raw[-1] in "\"'":
        return raw[1:-1]
    return raw


def _check(node: Node, field_schema: FieldSchema) -> None:
    if isinstance(node, Junction):
        for part in node.parts:
            _check(part, field_schema)
        return
    schema = field_schema(node.path)
    if schema is None:
        raise QueryError(f"field '{'.'.join(node.path)}' does not exist in the object's fields")
    if node.comparator == "is" and node.value not in ("NULL", "NOT_NULL"):
        raise QueryError(f"'filter' invalid: is takes NULL or NOT_NULL, not '{node.value}'")
    enum = schema.get("enum")
    if enum and node.comparator != "is":
        values = node.value if isinstance(node.value, list) else [node.value]
        bad = [v for v in values if v not in enum]
        if bad:
            raise QueryError(f"invalid value {bad[0]!r} for field '{'.'.join(node.path)}': one of {enum}")


def matches(node: Node, record: Mapping[str, Any]) -> bool:
    if isinstance(node, Junction):
        results = (matches(part, record) for part in node.parts)
        if node.kind == "and":
            return all(results)
        if node.kind == "or":
            return any(results)
        return not next(iter(results))
    actual: Any = record
    for key in node.path:
        actual = actual.get(key) if isinstance(actual, Mapping) else None
    return _compare(actual, node.comparator, node.value)


def _compare(actual: Any, comparator: str, wanted: Any) -> bool:
    if comparator == "is":
        return (actual is None) == bool(wanted == "NULL")
    if actual is None:
        return False  # SQL: a comparison with NULL is never true
    if comparator == "containsAny":
        return isinstance(actual, list) and any(str(item) in wanted for item in actual)
    if comparator == "in":
        return any(_compare(actual, "eq", item) for item in wanted)
    if comparator in ("startsWith", "endsWith", "like", "ilike"):
        text = str(actual)
        if comparator == "startsWith":
            return text.startswith(wanted)
        if comparator == "endsWith":
            return text.endswith(wanted)
        pattern = wanted.replace("%", "*").replace("_", "?")
        return fnmatch.fnmatchcase(text.lower(), pattern.lower()) if comparator == "ilike" \
            else fnmatch.fnmatchcase(text, pattern)
    left, right = _comparable(actual, wanted)
    if comparator == "eq":
        return bool(left == right)
    if comparator == "neq":
        return bool(left != right)
    try:
        return bool({"gt": left > right, "gte": left >= right, "lt": left < right, "lte": left <= right}[comparator])
    except TypeError:
        raise QueryError(f"cannot compare {actual!r} with {wanted!r}") from None


def _comparable(actual: Any, wanted: str) -> tuple[Any, Any]:
    """The record's value and the filter's text as Postgres would compare them: numbers as numbers,
    booleans as booleans, timestamps as instants, text as text."""
    if isinstance(actual, bool):
        return actual, wanted.lower() == "true"
    if isinstance(actual, (int, float)):
        try:
            return actual, float(wanted)
        except ValueError:
            raise QueryError(f"invalid input syntax for a number: \"{wanted}\"") from None
    if isinstance(actual, str) and _ISO.match(actual) and _ISO.match(wanted):
        return _instant(actual), _instant(wanted)
    return str(actual), wanted


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        from datetime import UTC

        moment = moment.replace(tzinfo=UTC)
    return moment


# --- order_by --------------------------------------------------------------------------------------
def parse_order_by(text: str | None, field_schema: FieldSchema) -> list[tuple[tuple[str, ...], str]]:
    order: list[tuple[tuple[str, ...], str]] = []
    for item in (text.split(",") if text else []):
        if "[" in item and "]" in item:
            name, _, rest = item.partition("[")
            direction = rest.replace("]", "")
            if direction not in DIRECTIONS:
                raise QueryError(
                    f"'order_by' direction '{direction}' invalid. Allowed values are "
                    f"'{', '.join(sorted(DIRECTIONS))}'. eg: ?order_by=field_1[AscNullsFirst],field_2[DescNullsLast]")
        else:
            name, direction = item, "AscNullsFirst"
        path = tuple(name.split("."))
        if field_schema(path) is None:
            raise QueryError(f"field '{name}' does not exist in the object's fields")
        order.append((path, direction))
    if not any(path == ("id",) for path, _ in order):
        order.append((("id",), "AscNullsFirst"))  # Twenty's addDefaultOrderById: a total, stable order
    return order


def sort_records(records: list[dict[str, Any]], order: list[tuple[tuple[str, ...], str]]) -> list[dict[str, Any]]:
    ordered = list(records)
    for path, direction in reversed(order):  # stable sorts, last key first
        descending = direction.startswith("Desc")
        nulls_first = direction.endswith("NullsFirst")
        present = [r for r in ordered if _at(r, path) is not None]
        absent = [r for r in ordered if _at(r, path) is None]
        present.sort(key=lambda r, p=path: _sort_key(_at(r, p)), reverse=descending)  # type: ignore[misc]
        ordered = absent + present if nulls_first else present + absent
    return ordered


def _at(record: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = record
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, (int, float)):
        return (0, value)
    if isinstance(value, str) and _ISO.match(value):
        return (1, _instant(value).timestamp())
    return (2, str(value))
