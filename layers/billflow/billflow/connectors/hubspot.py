"""HubSpot as the CRM billflow reads from (lookups, search) and writes back to, over CRM v3 and associations v4.

- records: GET /crm/v3/objects/{object}/{id}?properties=... answers {id, properties (strings), createdAt,
  updatedAt, archived}; billflow reads them through models.hubspot.normalise_record (HubSpot's property
  names, plus id, name, amount {amountMicros, currencyCode}, a company's address, a contact's name/emails);
- write-back: PATCH /crm/v3/objects/{object}/{id} with {"properties": {name: "text"}} (HubSpot properties
  are strings: numbers and booleans are sent as their text);
- lookup of a deal (or quote, payment): the record as HubSpot holds it now (webhooks carry one property), its
  company and its contacts through GET /crm/v4/objects/{object}/{id}/associations/{to} (the first
  associated contact is the one billed, as HubSpot's QuickBooks actions do; all of them under "contacts"),
  and its line items (POST /crm/v3/objects/line_items/batch/read) in billflow's normalised line-item shape;
  a payment also says whether it paid an invoice (`paid_invoice`, see lookup);
- search: POST /crm/v3/objects/{object}/search sorted by last modification, at most 200 a page, 10,000
  results a query (past that the window is split where the reading reached, see search_records), and 5
  search requests a second per account (throttled here; a 429 is waited out as HubSpot's Retry-After says).
  Filters are one filter group (at most 10 filters); a time is sent as epoch milliseconds, which HubSpot
  compares with datetime properties as instants and with date properties (stored at midnight UTC) as days.

Connection settings: base_url (default https://api.hubapi.com), and either private_app_token (a private
app's access token, sent as Bearer) or OAuth (client_id, client_secret, refresh_token; access tokens are
refreshed at POST /oauth/v1/token and kept in the connection's secret, see connectors/oauth.py), optionally
properties ({"deal": ["invoice_id"], "company": ["stripe_customer_id"]}: the portal's own properties rules
read or write back, read with the defaults; HubSpot answers only the properties asked for), portal_id (shown by
test_connection) and timeout_seconds.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

from billflow.connectors.base import ConnectionReport, CrmConnector, RecordFilter, RecordPage, RecordQuery
from billflow.connectors.http import DEFAULT_TIMEOUT, HttpResponse, raise_for, request, retry_after
from billflow.connectors.oauth import OAuthSession
from billflow.errors import ConfigurationError, TargetRejected, TransientError
from billflow.models.hubspot import HubSpotObject, hubspot_object, normalise_record
from billflow.storage.secrets import Connection

TARGET = "HubSpot"
DEFAULT_BASE_URL = "https://api.hubapi.com"
OAUTH_REFRESH_PATH = "/oauth/v1/token"
SEARCH_PAGE_MAX = 200  # HubSpot: limit is at most 200
SEARCH_RESULTS_MAX = 10_000  # HubSpot: a search query pages through at most 10,000 results
SEARCH_PER_SECOND = 5  # HubSpot: search endpoints allow 5 requests a second per account
# A second, and a margin: requests sent a second apart can reach HubSpot closer together than that.
SEARCH_WINDOW = 1.05
FILTERS_PER_GROUP = 10  # HubSpot (since August 2024): 10 filters a group, 5 groups, 25 filters a query
MAX_429_ROUNDS = 3
LAST_MODIFIED = {"contact": "lastmodifieddate"}  # every other object: hs_lastmodifieddate

# Properties billflow asks for; the rest of a record is not needed to invoice it.
PROPERTIES: dict[str, tuple[str, ...]] = {
    "deal": ("dealname", "amount", "deal_currency_code", "dealstage", "pipeline", "closedate", "hs_object_id",
             "hs_lastmodifieddate", "description", "hubspot_owner_id"),
    "company": ("name", "domain", "address", "address2", "city", "state", "zip", "country", "phone",
                "hs_object_id"),
    "contact": ("firstname", "lastname", "email", "phone", "company", "hs_object_id"),
    "quote": ("hs_title", "hs_quote_amount", "hs_currency", "hs_status", "hs_payment_status", "hs_esign_date",
              "hs_esign_num_signers_completed", "hs_esign_num_signers_required", "hs_expiration_date",
              "hs_object_id"),
    "commerce_payment": ("hs_initial_amount", "hs_currency_code", "hs_latest_status", "hs_payment_method_type",
                         "hs_payment_source", "hs_reference_number", "hs_initiated_date", "hs_object_id"),
    "invoice": ("hs_number", "hs_amount_billed", "hs_currency", "hs_invoice_status", "hs_object_id"),
}
LINE_ITEM_PROPERTIES = ("name", "hs_sku", "quantity", "price", "amount", "discount", "hs_discount_percentage",
                        "tax", "hs_tax_rate", "hs_line_item_currency_code", "description", "hs_product_id",
                        "hs_recurring_billing_period", "recurringbillingfrequency", "hs_position_on_quote")
# What a lookup reads for each object: its company, contacts and line items.
_ASSOCIATED = {"deal", "quote", "commerce_payment", "invoice"}

_OPS = {"eq": "EQ", "neq": "NEQ", "gt": "GT", "gte": "GTE", "lt": "LT", "lte": "LTE", "in": "IN",
        "is_null": "NOT_HAS_PROPERTY", "is_not_null": "HAS_PROPERTY"}


class SearchThrottle:
    """At most SEARCH_PER_SECOND search calls a second per account, in this process (a sweep pages serially
    in one function; a 429 from calls elsewhere is waited out as HubSpot says)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.clock = clock
        self.sleep = sleep
        self._last: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def wait(self, account: str) -> None:
        with self._lock:
            calls = self._last.setdefault(account, [])
            now = self.clock()
            calls[:] = [t for t in calls if now - t < SEARCH_WINDOW]
            while len(calls) >= SEARCH_PER_SECOND:
                pause = SEARCH_WINDOW - (now - calls[0])
                if pause > 0:
                    self.sleep(pause)
                    now = self.clock()
                calls.pop(0)  # waited out (popped, not compared again: float sums drift)
                calls[:] = [t for t in calls if now - t < SEARCH_WINDOW]
            calls.append(now)


# One throttle per process: connectors are made afresh for each call (connectors._load), and a scheduler pass
# or a sweep searches for several rules of one account in a row.
_PROCESS_THROTTLE = SearchThrottle()


class HubSpotConnector(CrmConnector):
    kind: ClassVar[str] = "hubspot"

    def __init__(self, throttle: SearchThrottle | None = None) -> None:
        self.throttle = throttle or _PROCESS_THROTTLE
        self._sessions: dict[str, OAuthSession] = {}
        self._guard = threading.Lock()

    # --- records -----------------------------------------------------------------------------------
    def get_record(
        self, connection: Connection, object_name: str, record_id: str, fields: Collection[str] = ()
    ) -> dict[str, Any] | None:
        found = _object(object_name)
        doc = self._read(connection, found, record_id, [_property(f) for f in fields])
        return None if doc is None else _normalised(found, doc)

    def update_record(
        self, connection: Connection, object_name: str, record_id: str, fields: dict[str, Any]
    ) -> None:
        if not fields:
            return
        found = _object(object_name)
        body = {"properties": {k: _text(v) for k, v in fields.items()}}
        self._call(connection, "PATCH", f"/crm/v3/objects/{found.path}/{_id(record_id)}", body=body)

    # --- lookup ------------------------------------------------------------------------------------
    def lookup(self, connection: Connection, object_name: str, record: dict[str, Any]) -> dict[str, Any]:
        """The record as HubSpot holds it now, its company, its contacts (the first one as `contact`) and its
        line items. For a payment, `record.paid_invoice` is True when it paid a HubSpot invoice (associated
        with one, or its source says so): rules add `paid_invoice equals false`, the seeds' "source is not
        invoice" filter, so an invoice paid online is never invoiced a second time."""
        found = _object(object_name)
        record_id = str(record.get("id") or record.get("hs_object_id") or "")
        if not record_id:
            raise TargetRejected(f"{TARGET}: the {found.name} has no id to look up")
        doc = self._read(connection, found, record_id)
        if doc is None:
            return {"record": None, "company": None, "contact": None, "contacts": [], "line_items": []}
        fresh = _normalised(found, doc)
        result: dict[str, Any] = {"record": fresh, "company": None, "contact": None, "contacts": [],
                                  "line_items": []}
        if found.name not in _ASSOCIATED and found.name != "company":
            return result
        if found.name == "company":
            result["company"] = fresh
            return result
        company_ids = self.associated_ids(connection, found, record_id, "companies")
        contact_ids = self.associated_ids(connection, found, record_id, "contacts")
        if company_ids:
            result["company"] = self.get_record(connection, "company", company_ids[0])
            fresh["companyId"] = company_ids[0]
        contacts = [c for c in (self.get_record(connection, "contact", i) for i in contact_ids[:10]) if c]
        result["contacts"] = contacts
        result["contact"] = contacts[0] if contacts else None
        if contacts:
            fresh["pointOfContactId"] = contacts[0]["id"]
        line_item_ids = self.associated_ids(connection, found, record_id, "line_items")
        currency = (fresh.get("amount") or {}).get("currencyCode")
        result["line_items"] = [{**item, "currency": item["currency"] or currency}
                                for item in self.line_items(connection, line_item_ids)]
        if found.name == "commerce_payment":
            invoices = self.associated_ids(connection, found, record_id, "invoices")
            source = str(fresh.get("hs_payment_source") or "").lower()
            fresh["paid_invoice"] = bool(invoices) or "invoice" in source
        return result

    def associated_ids(self, connection: Connection, found: HubSpotObject, record_id: str, to: str) -> list[str]:
        """Ids associated with the record, in the order HubSpot lists them (every page)."""
        ids: list[str] = []
        after: str | None = None
        while True:
            query = {"limit": "500", **({"after": after} if after else {})}
            doc = self._call(connection, "GET",
                             f"/crm/v4/objects/{found.path}/{_id(record_id)}/associations/{to}", query=query)
            for result in (doc or {}).get("results") or []:
                to_id = result.get("toObjectId") if isinstance(result, dict) else None
                if to_id is not None and str(to_id) not in ids:
                    ids.append(str(to_id))
            after = (((doc or {}).get("paging") or {}).get("next") or {}).get("after")
            if not after:
                return ids

    def line_items(self, connection: Connection, ids: list[str]) -> list[dict[str, Any]]:
        """The line items in billflow's normalised shape, in their order on the deal (hs_position_on_quote,
        then association order)."""
        items: list[dict[str, Any]] = []
        for start in range(0, len(ids), 100):  # batch/read takes at most 100 inputs
            chunk = ids[start:start + 100]
            doc = self._call(connection, "POST", "/crm/v3/objects/line_items/batch/read", body={
                "inputs": [{"id": i} for i in chunk], "properties": list(LINE_ITEM_PROPERTIES),
                "propertiesWithHistory": [],
            })
            items.extend(r for r in (doc or {}).get("results") or [] if isinstance(r, dict))
        order = {i: n for n, i in enumerate(ids)}
        items.sort(key=lambda r: (_position(r), order.get(str(r.get("id")), len(order))))
        return [line_item(r.get("properties") or {}) for r in items]

    # --- search ------------------------------------------------------------------------------------
    def search_records(
        self, connection: Connection, query: RecordQuery, cursor: str | None = None
    ) -> RecordPage:
        """One page, sorted by last modification. HubSpot pages a query through at most 10,000 results; before
        that, the cursor moves the window's start to the last modification time reached ("<ms>:<after>") and
        the search goes on from there: a window of any size is read whole, in slices HubSpot accepts. (A
        record modified in the very millisecond a slice ends may come twice; the sweep's idempotency keys make
        that harmless.)"""
        found = _object(query.object_name)
        modified = LAST_MODIFIED.get(found.name, "hs_lastmodifieddate")
        since, _, after = (cursor or "0").rpartition(":")
        window: list[dict[str, Any]] = []
        lower = since or (_ms(query.updated_after) if query.updated_after is not None else "")
        if lower:
            window.append({"propertyName": modified, "operator": "GTE", "value": lower})
        if query.updated_before is not None:
            window.append({"propertyName": modified, "operator": "LT", "value": _ms(query.updated_before)})
        filters = _within_group_limit(window, query.filters)
        limit = max(1, min(query.page_size, SEARCH_PAGE_MAX))
        # HubSpot answers only the properties asked for: the ones filtered on and the ones the caller reads
        # (a date rule's custom date property, a criterion's, a write-back field), by their first part.
        wanted = [f.field for f in query.filters if "." not in f.field] + [_property(f) for f in query.fields]
        body = {
            "filterGroups": [{"filters": filters}] if filters else [],
            "properties": list(dict.fromkeys([*_properties(connection, found), *wanted, modified])),
            "sorts": [modified],
            "limit": limit,
            "after": after or "0",
        }
        account = connection.secret_id or connection.name
        for _ in range(MAX_429_ROUNDS + 1):
            self.throttle.wait(account)
            answer = self._send(connection, "POST", f"/crm/v3/objects/{found.path}/search", body=body)
            if answer.status != 429:
                break
            self.throttle.sleep(min(10.0, retry_after(answer.headers) or 1.0))
        raise_for(answer, TARGET)
        doc = _json(answer)
        records = [_normalised(found, r) for r in doc.get("results") or [] if isinstance(r, dict)]
        following = ((doc.get("paging") or {}).get("next") or {}).get("after")
        if not following or not records:
            return RecordPage(records=records, next_cursor=None)
        if int(following) + limit <= SEARCH_RESULTS_MAX:
            return RecordPage(records=records, next_cursor=f"{since}:{following}" if since else str(following))
        reached = _epoch_ms(records[-1].get(modified))
        if reached is None or reached == lower:
            raise TargetRejected(f"{TARGET}: more than {SEARCH_RESULTS_MAX} {found.path} were modified in the same "
                                 "millisecond; the search cannot page past them", status=400)
        return RecordPage(records=records, next_cursor=f"{reached}:0")

    # --- connection test ---------------------------------------------------------------------------
    def test_connection(self, connection: Connection, tenant: str) -> ConnectionReport:
        """GET /crm/v3/objects/deals?limit=1: the token is accepted and may read deals."""
        doc = self._call(connection, "GET", "/crm/v3/objects/deals", query={"limit": "1"})
        notes = []
        results = (doc or {}).get("results")
        if isinstance(results, list):
            notes.append("deals are readable" + (" (none yet)" if not results else ""))
        return ConnectionReport(connection=connection.name, kind=self.kind, checked="GET /crm/v3/objects/deals?limit=1",
                                account_id=str(connection.settings.get("portal_id") or "") or None, notes=notes)

    # --- plumbing ----------------------------------------------------------------------------------
    def _read(
        self, connection: Connection, found: HubSpotObject, record_id: str, wanted: Collection[str] = ()
    ) -> dict[str, Any] | None:
        query = {"properties": ",".join(dict.fromkeys([*_properties(connection, found), *wanted]))}
        answer = self._send(connection, "GET", f"/crm/v3/objects/{found.path}/{_id(record_id)}", query=query)
        if answer.status == 404:
            return None
        raise_for(answer, TARGET)
        return _json(answer)

    def _call(
        self, connection: Connection, method: str, path: str, *, query: dict[str, str] | None = None,
        body: Any = None,
    ) -> Any:
        answer = self._send(connection, method, path, query=query, body=body)
        raise_for(answer, TARGET)
        return answer.json()

    def _send(
        self, connection: Connection, method: str, path: str, *, query: dict[str, str] | None = None,
        body: Any = None,
    ) -> HttpResponse:
        base = str(connection.settings.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        url = base + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            payload = json.dumps(body).encode()
        timeout = float(connection.settings.get("timeout_seconds") or DEFAULT_TIMEOUT)
        token = connection.settings.get("private_app_token")
        if token:
            headers["Authorization"] = f"Bearer {token}"
            return request(method, url, headers=headers, body=payload, timeout=timeout, target=TARGET,
                           raise_for_status=False)
        if not connection.settings.get("refresh_token"):
            raise ConfigurationError(f"connection {connection.name!r} needs private_app_token, or OAuth "
                                     "client_id, client_secret and refresh_token")
        return self._session(connection, base).request(method, url, headers=headers, body=payload, target=TARGET,
                                                       raise_for_status=False, timeout=timeout)

    def _session(self, connection: Connection, base: str) -> OAuthSession:
        key = connection.secret_id or f"{connection.name}@{base}"
        with self._guard:
            session = self._sessions.get(key)
            if session is None or session.connection != connection:
                # HubSpot takes the client id and secret in the form body, not HTTP Basic.
                session = OAuthSession(connection, token_url=base + OAUTH_REFRESH_PATH, client_auth="body")
                self._sessions[key] = session
            return session


def line_item(properties: dict[str, Any]) -> dict[str, Any]:
    """A HubSpot line item in billflow's normalised shape (the one every CRM's lookup gives):
    {name, sku, quantity, unit_price (major units, decimal text), currency, discount_percent, discount_amount,
    taxable, description, term}."""
    tax = _decimal(properties.get("tax"))
    rate = _decimal(properties.get("hs_tax_rate"))
    taxable: bool | None = None
    if tax is not None or rate is not None:
        taxable = bool((tax or 0) > 0 or (rate or 0) > 0)
    return {
        "name": str(properties.get("name") or properties.get("hs_sku") or "Item"),
        "sku": properties.get("hs_sku") or None,
        "quantity": str(_decimal(properties.get("quantity")) or Decimal(1)),
        "unit_price": str(_decimal(properties.get("price")) or Decimal(0)),
        "currency": properties.get("hs_line_item_currency_code") or None,
        "discount_percent": _decimal_text(properties.get("hs_discount_percentage")),
        "discount_amount": _decimal_text(properties.get("discount")),
        "taxable": taxable,
        "description": properties.get("description") or None,
        "term": properties.get("hs_recurring_billing_period") or properties.get("recurringbillingfrequency") or None,
    }


def _decimal(value: Any) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _decimal_text(value: Any) -> str | None:
    number = _decimal(value)
    return None if number is None or number == 0 else str(number)


def _position(record: dict[str, Any]) -> int:
    raw = (record.get("properties") or {}).get("hs_position_on_quote")
    try:
        return int(str(raw))
    except (TypeError, ValueError):
        return 1 << 30


def _properties(connection: Connection, found: HubSpotObject) -> list[str]:
    """The properties read of an object: billflow's defaults and the connection's own (custom) ones."""
    extra = (connection.settings.get("properties") or {}).get(found.name) or []
    if isinstance(extra, str):
        extra = [extra]
    return list(dict.fromkeys([*PROPERTIES.get(found.name, ("hs_object_id",)), *map(str, extra)]))


def _object(name: str) -> HubSpotObject:
    found = hubspot_object(name)
    if found is None:
        raise ConfigurationError(f"{TARGET} has no object {name!r} billflow reads")
    return found


def _normalised(found: HubSpotObject, doc: dict[str, Any]) -> dict[str, Any]:
    properties = doc.get("properties") if isinstance(doc.get("properties"), dict) else {}
    record = normalise_record(found.name, str(doc.get("id") or ""), dict(properties or {}))
    for key in ("createdAt", "updatedAt", "archived"):
        if key in doc:
            record[key] = doc[key]
    return record


def _id(record_id: str) -> str:
    text = str(record_id).strip()
    if not text:
        raise TargetRejected(f"{TARGET}: an empty record id")
    return quote(text, safe="")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, dict | list) else str(value)


def _property(path: str) -> str:
    """The property a record field path reads: its first part (amount.amountMicros: amount). HubSpot ignores
    the properties an object does not have, so billflow's derived names (name, id) cost nothing."""
    return path.split(".", 1)[0]


def _within_group_limit(window: list[dict[str, Any]], conditions: tuple[RecordFilter, ...]) -> list[dict[str, Any]]:
    """One filter group of at most FILTERS_PER_GROUP filters: the window's and the ranges first; equalities past
    the limit are left out (callers decide every record's criteria themselves, so that costs reads only)."""
    ranges = [_filter(c) for c in conditions if c.op != "eq"]
    equalities = [_filter(c) for c in conditions if c.op == "eq"]
    kept = window + ranges
    if len(kept) > FILTERS_PER_GROUP:
        raise ConfigurationError(f"{TARGET} search takes at most {FILTERS_PER_GROUP} filters in a group; "
                                 f"this query needs {len(kept)} that are not equalities")
    return kept + equalities[:FILTERS_PER_GROUP - len(kept)]


def _filter(condition: RecordFilter) -> dict[str, Any]:
    operator = _OPS.get(condition.op)
    if operator is None:
        raise ConfigurationError(f"{TARGET} search has no operator for {condition.op!r}")
    out: dict[str, Any] = {"propertyName": condition.field, "operator": operator}
    if condition.op == "in":
        out["values"] = [_text(v) for v in (condition.value or [])]
    elif condition.op not in ("is_null", "is_not_null"):
        out["value"] = _ms(condition.value) if isinstance(condition.value, datetime) else _text(condition.value)
    return out


def _epoch_ms(value: Any) -> str | None:
    """A HubSpot date property (ISO 8601, or epoch milliseconds) as epoch milliseconds text."""
    text = str(value or "").strip()
    if text.isdigit():
        return text
    try:
        return _ms(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        return None


def _ms(when: datetime) -> str:
    moment = when if when.tzinfo else when.replace(tzinfo=UTC)
    return str(int(moment.timestamp() * 1000))


def _json(answer: HttpResponse) -> dict[str, Any]:
    try:
        doc = answer.json()
    except ValueError:
        raise TransientError(f"{TARGET} answered {answer.status} with a body that is not JSON") from None
    if not isinstance(doc, dict):
        raise TargetRejected(f"{TARGET} answered {answer.status} without a JSON object")
    return doc
