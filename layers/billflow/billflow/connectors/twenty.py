"""Twenty as the CRM billflow reads from (lookups) and writes back to, over its REST API.

Records live at {base_url}/rest/{object plural}/{id}: GET answers {"data": {"<singular>": {...}}}, PATCH takes
the fields to change and answers {"data": {"update<Singular>": {...}}}. Calls ask for depth=0 (the record
alone): a lookup fetches exactly the related records it needs, not every relation Twenty would embed.

Connection settings: base_url (https://api.twenty.com or a self-hosted URL), api_key (Bearer), optionally
timeout_seconds, object_plurals ({"invoiceRequest": "invoiceRequests"} for custom objects whose plural
the default rule gets wrong) and rate_limit_per_minute (default 100).

Lookup: the record's company and point of contact (an opportunity's companyId and pointOfContactId; a
person is its own contact, a company its own company), the company's other people (GET /rest/people with
companyId[eq], at most 50; setting lookup_people: false leaves them out) and, when the connection names a
line-item object, the record's line items. Twenty has no line items of its own: a workspace keeps them in a
custom object, named in the connection setting

    line_items: {object: lineItem, relation_field: opportunityId, parent_object: opportunity,
                 fields: {name: name, sku: sku, quantity: quantity, unit_price: unitPrice, ...}}

(fields default to DEFAULT_LINE_ITEM_FIELDS; a currency field {amountMicros, currencyCode} gives the amount in
major units and the currency) and read through search_records. lookup["line_items"] is the normalised list
every CRM connector answers (actions/drafts.py LINE_ITEM_KEYS).

Write-back (update_record) takes any field: dotted names set sub-fields of composites (amount.amountMicros,
address.addressCity, emails.primaryEmail), a plain value for a links/emails/phones field fills its primary
sub-field, amountMicros is sent as a number and currencyCode in capitals (patch_body).

Search (the reconciliation sweep, date-based rules) is GET /rest/{plural} with Twenty's list parameters:
filter `field[comparator]:value` joined by commas (Twenty's default conjunction is and), order_by, limit (at
most 200, the spec's maximum) and starting_after = the previous page's pageInfo.endCursor. Every page takes a
unit of the API key's budget first: Twenty allows 100 calls a minute per API key by default (its
API_RATE_LIMITING_* settings; a self-hosted workspace may differ: rate_limit_per_minute), and a spent budget
raises TransientError with the wait, as the Xero and Zoho Books budgets do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, TypeGuard
from urllib.parse import quote, urlencode

from billflow.connectors.base import (
    ConnectionReport,
    CrmConnector,
    RecordFilter,
    RecordPage,
    RecordQuery,
    iter_records,
)
from billflow.connectors.http import DEFAULT_TIMEOUT, HttpResponse, error_message, raise_for, request
from billflow.connectors.matching import flag_setting as flag
from billflow.errors import ConfigurationError, TargetRejected
from billflow.storage.rate_limits import RateLimit, RateLimiter, get_rate_limiter
from billflow.storage.secrets import Connection

TARGET = "Twenty"

# Twenty's standard objects whose plural is not the singular plus "s".
_PLURALS = {"opportunity": "opportunities", "company": "companies", "person": "people"}
# The list operation's limit parameter: {minimum: 0, maximum: 200, default: 60} in the spec.
MAX_PAGE_SIZE = 200
# Twenty's default API_RATE_LIMITING_LIMIT per API key and minute (cloud; self-hosted may configure it).
DEFAULT_CALLS_PER_MINUTE = 100
# billflow's comparators -> Twenty's filter comparators; null checks are `is` with NULL / NOT_NULL.
_COMPARATORS = {"eq": "eq", "neq": "neq", "gt": "gt", "gte": "gte", "lt": "lt", "lte": "lte", "in": "in"}
_NULL_CHECKS = {"is_null": "NULL", "is_not_null": "NOT_NULL"}
MAX_PEOPLE = 50  # the company's people a lookup reads (one page)
MAX_LINE_ITEMS = 1000
_MICROS = Decimal(1_000_000)
# Twenty's composite field types by their sub-fields (openapi.yaml: ...ForUpdate schemas).
_CURRENCY = frozenset({"amountMicros", "currencyCode"})
# Standard composite fields a plain value is written into: the sub-field it fills.
_PRIMARY_SUBFIELD = {
    "domainName": "primaryLinkUrl", "linkedinLink": "primaryLinkUrl", "xLink": "primaryLinkUrl",
    "emails": "primaryEmail", "phones": "primaryPhoneNumber",
}
_NOT_IN_NAMES = frozenset("[]:,()\"' ")


class TwentyConnector(CrmConnector):
    kind: ClassVar[str] = "twenty"

    def __init__(self, *, rate_limiter: RateLimiter | None = None) -> None:
        self._rate_limiter = rate_limiter

    def get_record(
        self, connection: Connection, object_name: str, record_id: str, fields: Collection[str] = ()
    ) -> dict[str, Any] | None:
        answer = self._call(connection, "GET", object_name, record_id)
        if _is_missing(answer):
            return None
        raise_for(answer, TARGET)
        return _unwrap(answer, object_name)

    def update_record(
        self, connection: Connection, object_name: str, record_id: str, fields: dict[str, Any]
    ) -> None:
        """PATCH any fields; composite fields in Twenty's shape (see patch_body)."""
        if not fields:
            return  # nothing to write: no call
        body = patch_body(fields)
        answer = self._call(connection, "PATCH", object_name, record_id, json.dumps(body).encode())
        raise_for(answer, TARGET)

    def lookup(self, connection: Connection, object_name: str, record: dict[str, Any]) -> dict[str, Any]:
        """What the documents need beyond the record: its company, its point of contact, the company's
        other people and the record's line items (see the module docstring).

        For an opportunity (or any object with companyId / pointOfContactId) those are the records the ids
        name; for a person, the person is the contact and their company the company; for a company, the
        company is itself. A missing id means no call; an id Twenty no longer knows (the company was
        deleted) gives None, so the formatter falls back to what the record itself holds.
        """
        company_id = record.get("companyId")
        contact_id = record.get("pointOfContactId")
        company: dict[str, Any] | None = None
        contact: dict[str, Any] | None = None
        if object_name == "company":
            company = record
        elif _is_id(company_id):
            company = self.get_record(connection, "company", company_id)
        if object_name == "person":
            contact = record
        elif _is_id(contact_id):
            contact = self.get_record(connection, "person", contact_id)
        found: dict[str, Any] = {"company": company, "contact": contact}
        if company is not None and _is_id(company.get("id")) and flag(connection, "lookup_people", True):
            found["people"] = self._people(connection, str(company["id"]), contact)
        settings = line_item_settings(connection)
        if settings is not None and settings.parent == object_name and _is_id(record.get("id")):
            found["line_items"] = self.line_items(connection, settings, str(record["id"]))
        return found

    def _people(
        self, connection: Connection, company_id: str, contact: dict[str, Any] | None
    ) -> list[dict[str, Any]]:
        """The company's other people (the point of contact is `contact`), at most MAX_PEOPLE."""
        query = RecordQuery("person", (RecordFilter("companyId", "eq", company_id),), page_size=MAX_PEOPLE)
        skip = contact.get("id") if contact else None
        return [p for p in self.search_records(connection, query).records if p.get("id") != skip]

    def line_items(self, connection: Connection, settings: LineItemSettings, record_id: str) -> list[dict[str, Any]]:
        """The record's line items from the configured object, in their `position` order, normalised."""
        query = RecordQuery(settings.object, (RecordFilter(settings.relation_field, "eq", record_id),),
                            page_size=MAX_PAGE_SIZE)
        rows = list(iter_records(self, connection, query, max_records=MAX_LINE_ITEMS + 1))
        if len(rows) > MAX_LINE_ITEMS:
            raise ConfigurationError(f"{TARGET}: more than {MAX_LINE_ITEMS} {settings.object} records on one "
                                     f"{settings.parent}: billflow makes no document of that many lines")
        rows.sort(key=lambda r: (not isinstance(r.get("position"), (int, float)), r.get("position") or 0))
        return [normalise_line_item(row, settings, number) for number, row in enumerate(rows, start=1)]

    def search_records(
        self, connection: Connection, query: RecordQuery, cursor: str | None = None
    ) -> RecordPage:
        """One page of GET /rest/{plural}?filter=...&order_by=id&limit=...&starting_after=cursor.

        Ordered by id: a record changed while the pages are read keeps its place, so paging neither skips
        nor repeats it (ordered by updatedAt it would jump to the end).
        """
        params = {"filter": search_filter(query), "order_by": "id[AscNullsFirst]",
                  "limit": str(max(1, min(query.page_size, MAX_PAGE_SIZE))), "depth": "0"}
        if not params["filter"]:
            del params["filter"]
        if cursor:
            params["starting_after"] = cursor
        plural = _plural(connection, query.object_name)
        url = f"{_rest_root(connection)}/{plural}?{urlencode(params, quote_via=quote, safe='[]:,()')}"
        limiter = self._rate_limiter or get_rate_limiter()
        limiter.take(TARGET, _budget_scope(connection), _rate_limit(connection))
        answer = request("GET", url, headers=self._headers(connection), target=TARGET, raise_for_status=False,
                         timeout=float(connection.settings.get("timeout_seconds") or DEFAULT_TIMEOUT))
        raise_for(answer, TARGET)
        return _page(answer, plural)

    def test_connection(self, connection: Connection, tenant: str) -> ConnectionReport:
        """GET /rest/opportunities?limit=1: the key is accepted and the workspace answers."""
        url = f"{_rest_root(connection)}/{_plural(connection, 'opportunity')}?limit=1"
        answer = request("GET", url, headers=self._headers(connection), target=TARGET, raise_for_status=False,
                         timeout=float(connection.settings.get("timeout_seconds") or DEFAULT_TIMEOUT))
        raise_for(answer, TARGET)
        doc = answer.json()
        count = doc.get("totalCount") if isinstance(doc, dict) else None
        return ConnectionReport(
            connection=connection.name, kind=self.kind, checked="GET /rest/opportunities?limit=1",
            notes=[f"{count} opportunities in the workspace"] if isinstance(count, int) else [])

    # --- plumbing --------------------------------------------------------------------------------
    @staticmethod
    def _headers(connection: Connection) -> dict[str, str]:
        return {"Authorization": f"Bearer {connection.require('api_key')}", "Accept": "application/json"}

    def _call(
        self, connection: Connection, method: str, object_name: str, record_id: str, body: bytes | None = None
    ) -> HttpResponse:
        if not _is_id(record_id):
            raise TargetRejected(f"{TARGET}: {object_name} id {record_id!r} is not a record id")
        # depth=0: the record alone, also in a PATCH's answer, which billflow does not read.
        url = f"{_rest_root(connection)}/{_plural(connection, object_name)}/{quote(record_id, safe='')}?depth=0"
        headers = self._headers(connection)
        if body is not None:
            headers["Content-Type"] = "application/json"
        timeout = float(connection.settings.get("timeout_seconds") or DEFAULT_TIMEOUT)
        return request(
            method, url, headers=headers, body=body, timeout=timeout, target=TARGET, raise_for_status=False
        )


# --- line items ------------------------------------------------------------------------------------
# The normalised line item (drafts.LINE_ITEM_KEYS) <- the custom object's field, by default of the same name.
DEFAULT_LINE_ITEM_FIELDS = {
    "name": "name", "sku": "sku", "quantity": "quantity", "unit_price": "unitPrice",
    "discount_percent": "discountPercent", "discount_amount": "discountAmount", "taxable": "taxable",
    "description": "description", "term": "term",
}


@dataclass(frozen=True)
class LineItemSettings:
    object: str  # the custom object's singular name, e.g. lineItem
    relation_field: str  # its field holding the parent record's id, e.g. opportunityId
    parent: str = "opportunity"
    fields: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_LINE_ITEM_FIELDS))


def line_item_settings(connection: Connection) -> LineItemSettings | None:
    """The connection's line_items setting; None when the workspace keeps no line items."""
    raw = connection.settings.get("line_items")
    if raw in (None, "", {}):
        return None
    where = f"connection {connection.name!r}: line_items"
    if not isinstance(raw, dict) or not isinstance(raw.get("object"), str) or not raw["object"].strip():
        raise ConfigurationError(f"{where} needs object (the custom object's singular name, e.g. lineItem)")
    relation = raw.get("relation_field")
    if not isinstance(relation, str) or not relation.strip():
        raise ConfigurationError(f"{where} needs relation_field (its field holding the record's id, e.g. "
                                 "opportunityId)")
    mapped = raw.get("fields") or {}
    if not isinstance(mapped, dict) or not all(isinstance(v, str) and v for v in mapped.values()):
        raise ConfigurationError(f"{where}.fields maps line item keys to field names (strings)")
    unknown = sorted(set(mapped) - set(DEFAULT_LINE_ITEM_FIELDS))
    if unknown:
        raise ConfigurationError(f"{where}.fields: unknown key(s) {', '.join(unknown)}; known: "
                                 f"{', '.join(DEFAULT_LINE_ITEM_FIELDS)}")
    parent = raw.get("parent_object") or "opportunity"
    return LineItemSettings(raw["object"].strip(), relation.strip(), str(parent),
                            {**DEFAULT_LINE_ITEM_FIELDS, **mapped})


def normalise_line_item(row: dict[str, Any], settings: LineItemSettings, number: int) -> dict[str, Any]:
    """One line-item record in the shape every CRM connector answers: decimal strings in major units;
    a currency composite {amountMicros, currencyCode} gives its amount and currency."""

    def read(key: str) -> Any:
        value: Any = row
        for part in settings.fields[key].split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value

    currency: str | None = None

    def money(key: str) -> str | None:
        nonlocal currency
        value = read(key)
        if isinstance(value, dict) and value.keys() & _CURRENCY:
            code = value.get("currencyCode")
            if isinstance(code, str) and code:
                if currency and code.upper() != currency:
                    raise ConfigurationError(f"{TARGET}: line item {number} mixes {currency} and {code.upper()}")
                currency = code.upper()
            micros = value.get("amountMicros")
            return None if micros in (None, "") else _text(_number(micros, key, number) / _MICROS)
        return None if value in (None, "") else _text(_number(value, key, number))

    def number_text(key: str) -> str | None:
        value = read(key)
        return None if value in (None, "") else _text(_number(value, key, number))

    unit_price = money("unit_price")
    if unit_price is None:
        raise ConfigurationError(f"{TARGET}: {settings.object} {row.get('id')} (line {number}) has no "
                                 f"{settings.fields['unit_price']}")
    discount_amount = money("discount_amount")  # read before currency is final: it may name it too
    taxable = read("taxable")
    return {
        "name": _plain(read("name")) or "",
        "sku": _plain(read("sku")),
        "quantity": number_text("quantity") or "1",
        "unit_price": unit_price,
        "currency": currency,
        "discount_percent": number_text("discount_percent"),
        "discount_amount": discount_amount,
        "taxable": taxable if isinstance(taxable, bool) else None,
        "description": _plain(read("description")),
        "term": _plain(read("term")),
    }


def _number(value: Any, key: str, number: int) -> Decimal:
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        result = Decimal("NaN")
    if isinstance(value, bool) or not result.is_finite():
        raise ConfigurationError(f"{TARGET}: line item {number}: {key} {str(value)[:40]!r} is not a number")
    return result


def _text(value: Decimal) -> str:
    """A decimal as plain text, without exponent or trailing zeros (1.50 -> "1.5", 2E+1 -> "20")."""
    return format(value.normalize(), "f")


def _plain(value: Any) -> str | None:
    """Text from a text field, or from a rich-text field ({markdown} / {blocknote})."""
    if isinstance(value, dict):
        value = value.get("markdown") or value.get("text")
    if value in (None, ""):
        return None
    return str(value).strip() or None


# --- write-back ---------------------------------------------------------------------------------------
def patch_body(fields: dict[str, Any]) -> dict[str, Any]:
    """The PATCH body for fields given flat or dotted, in Twenty's composite shapes:

    - a dotted name sets one sub-field (amount.amountMicros, address.addressCity, emails.primaryEmail);
      sub-fields of one composite are sent together;
    - a plain value for a standard links, emails or phones field fills its primary sub-field
      (domainName: "https://acme.com" -> {"primaryLinkUrl": ...});
    - amountMicros is sent as a number (the spec's type), currencyCode in capitals.
    A plain value for a currency field is refused: micros or major units cannot be guessed.
    """
    body: dict[str, Any] = {}
    for name, value in fields.items():
        head, _, rest = name.partition(".")
        if rest:
            node = body.setdefault(head, {})
            if not isinstance(node, dict):
                raise ConfigurationError(f"{TARGET}: {head} is set both whole and by sub-field")
            for part in rest.split(".")[:-1]:
                node = node.setdefault(part, {})
            node[rest.split(".")[-1]] = value
        elif head in _PRIMARY_SUBFIELD and value is not None and not isinstance(value, dict):
            body.setdefault(head, {})[_PRIMARY_SUBFIELD[head]] = value
        elif head in body and isinstance(body[head], dict) and isinstance(value, dict):
            body[head].update(value)
        else:
            body[head] = value
    for name, value in body.items():
        if isinstance(value, dict) and value.keys() & _CURRENCY:
            body[name] = _currency(name, value)
    return body


def _currency(name: str, value: dict[str, Any]) -> dict[str, Any]:
    out = dict(value)
    micros = out.get("amountMicros")
    if micros not in (None, ""):
        try:
            amount = Decimal(str(micros))
        except InvalidOperation:
            amount = Decimal("NaN")
        if isinstance(micros, bool) or not amount.is_finite():
            raise ConfigurationError(f"{TARGET}: {name}.amountMicros {str(micros)[:40]!r} is not a number")
        out["amountMicros"] = int(amount) if amount == amount.to_integral_value() else float(amount)
    code = out.get("currencyCode")
    if isinstance(code, str):
        out["currencyCode"] = code.strip().upper()
    return out


def search_filter(query: RecordQuery) -> str:
    """Twenty's filter parameter for a query: conditions joined by commas (Twenty's default `and`)."""
    conditions = [_condition(f) for f in query.filters]
    if query.updated_after is not None:
        conditions.append(f"updatedAt[gte]:{_literal(query.updated_after)}")
    if query.updated_before is not None:
        conditions.append(f"updatedAt[lt]:{_literal(query.updated_before)}")
    return ",".join(conditions)


def _condition(condition: RecordFilter) -> str:
    name = condition.field
    # Twenty splits a condition at its first "[" and ":" outside quotes; a field name holding one is no field.
    if not name or any(c in _NOT_IN_NAMES for c in name) or name.startswith(".") or name.endswith("."):
        raise ConfigurationError(f"Twenty search: {name!r} is not a field name")
    if condition.op in _NULL_CHECKS:
        return f"{name}[is]:{_NULL_CHECKS[condition.op]}"
    if condition.op == "in":
        values = condition.value
        if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple, set, frozenset)) or not values:
            raise ConfigurationError(f"Twenty search: {name} in needs a non-empty list of values")
        items = [_literal(v, in_list=True) for v in values]
        return f"{name}[in]:[{','.join(items)}]"
    comparator = _COMPARATORS.get(condition.op)
    if comparator is None:
        raise ConfigurationError(f"Twenty search: unknown comparator {condition.op!r}")
    if condition.value is None:
        raise ConfigurationError(f"Twenty search: {name} {condition.op} needs a value (is_null checks for none)")
    return f"{name}[{comparator}]:{_literal(condition.value)}"


def _literal(value: Any, *, in_list: bool = False) -> str:
    """A value as Twenty's filter parser reads it: numbers and booleans bare, text in double quotes (which
    Twenty strips). Twenty has no escape: a double quote inside text, or a comma inside a list item (Twenty
    splits `in` lists at every comma), cannot be sent."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        value = moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    text = str(value)
    if '"' in text or (in_list and "," in text):
        raise ConfigurationError(f"Twenty search: the value {text!r} cannot be expressed in Twenty's filter syntax")
    return f'"{text}"'


def _page(answer: HttpResponse, plural: str) -> RecordPage:
    try:
        doc = answer.json()
    except ValueError:
        raise TargetRejected(f"{TARGET} answered {answer.status} with a body that is not JSON") from None
    data = doc.get("data") if isinstance(doc, dict) else None
    records = data.get(plural) if isinstance(data, dict) else None
    if records is None and isinstance(data, dict) and len(data) == 1:
        records = next(iter(data.values()))  # a custom object whose plural we were not given exactly
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise TargetRejected(f"{TARGET} answered {answer.status} without a data.{plural} list")
    info = doc.get("pageInfo") if isinstance(doc, dict) else None
    info = info if isinstance(info, dict) else {}
    cursor = info.get("endCursor")
    more = info.get("hasNextPage") is True and isinstance(cursor, str) and bool(cursor) and bool(records)
    return RecordPage(records=records, next_cursor=cursor if more else None)


def _rate_limit(connection: Connection) -> RateLimit:
    raw = connection.settings.get("rate_limit_per_minute") or DEFAULT_CALLS_PER_MINUTE
    try:
        return RateLimit(per_minute=int(raw))
    except (TypeError, ValueError):
        raise ConfigurationError("Twenty connection: rate_limit_per_minute must be a positive number") from None


def _budget_scope(connection: Connection) -> str:
    """Twenty counts calls per API key: the budget is the key's (a digest: the key itself never leaves the
    secret), shared by every tenant and rule that uses it."""
    key = str(connection.require("api_key"))
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _rest_root(connection: Connection) -> str:
    base = str(connection.require("base_url")).rstrip("/")
    # Accept the REST root itself too (https://crm.example.com/rest), as Twenty's API settings page shows it.
    return base if base.endswith("/rest") else f"{base}/rest"


def _plural(connection: Connection, object_name: str) -> str:
    overrides = connection.settings.get("object_plurals") or {}
    if object_name in overrides:
        return str(overrides[object_name])
    if object_name in _PLURALS:
        return _PLURALS[object_name]
    if object_name in _PLURALS.values():
        return object_name  # already plural
    if object_name.endswith("y") and len(object_name) > 1 and object_name[-2] not in "aeiou":
        return object_name[:-1] + "ies"
    if object_name.endswith(("s", "x", "z", "ch", "sh")):
        return object_name + "es"
    return object_name + "s"


def _is_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value.strip())


def _is_missing(answer: HttpResponse) -> bool:
    # Current Twenty answers 404 for an unknown id; versions before 1.x answered 400 "Record not found".
    if answer.status == 404:
        return True
    return answer.status == 400 and "record not found" in error_message(answer).lower()


def _unwrap(answer: HttpResponse, object_name: str) -> dict[str, Any] | None:
    try:
        doc = answer.json()
    except ValueError:
        raise TargetRejected(f"{TARGET} answered {answer.status} with a body that is not JSON") from None
    data = doc.get("data") if isinstance(doc, dict) else None
    if isinstance(data, dict):
        if object_name not in data and len(data) == 1:
            object_name = next(iter(data))  # a custom object whose singular we were not given exactly
        record = data.get(object_name, False)
        if record is None:
            return None  # {"data": {"company": null}}: nothing with that id
        if isinstance(record, dict):
            return record
    raise TargetRejected(f"{TARGET} answered {answer.status} without data.{object_name}")
