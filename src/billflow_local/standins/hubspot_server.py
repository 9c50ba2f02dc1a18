"""A HubSpot portal stand-in: deals, companies, contacts, line items, quotes, commerce payments and invoices in
memory, served over CRM v3 and associations v4, with the OAuth refresh endpoint.

Every request is checked against the trimmed official contracts (hubspot_contract.py) and so is every answer;
what the real HubSpot would refuse lands in `violations` and is answered in HubSpot's error shape
{status, message, correlationId, category}: a wrong token 401, an unknown record 404, a property the object
does not have 400 (PROPERTY_DOESNT_EXIST), a search over 200 a page or past 10,000 results 400, more than 5
search requests in a second 429 (with Retry-After).

Date and datetime properties are kept as HubSpot keeps them: a `date` property (what a date picker property
made in HubSpot is) holds a calendar date, set as "YYYY-MM-DD" or epoch milliseconds at midnight UTC (any other
time is refused: "... is at 4:10:33.600 UTC, not midnight!") and read back as "YYYY-MM-DD"; a `datetime`
property (closedate, createdate, hs_lastmodifieddate) takes ISO 8601 or epoch milliseconds and reads back as
ISO 8601 UTC with milliseconds. Search compares both as epoch milliseconds, as HubSpot does.

    with FakeHubSpot() as hubspot:
        acme = hubspot.add("company", {"name": "Acme", "city": "Lyon"})
        deal = hubspot.add("deal", {"dealname": "Big deal", "amount": "1500"}, associations={"company": [acme]})
        ...
        assert hubspot.patched("deal", deal) == {"invoice_id": "in_1"}
"""

from __future__ import annotations

import copy
import functools
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs

from billflow.models.hubspot import BY_NAME, BY_PATH, hubspot_object
from billflow.storage.secrets import Connection

from billflow_local.standins.base import FakeServer, Request, Response
from billflow_local.standins.hubspot_contract import HubSpotContract

DEFAULT_TOKEN = "pat-na1-stand-in-token"  # noqa: S105 - the stand-in's own test token
CLIENT_ID = "stand-in-client-id"
CLIENT_SECRET = "stand-in-client-secret"  # noqa: S105 - the stand-in's own test client
SEARCH_PER_SECOND = 5
SEARCH_PAGE_MAX = 200
SEARCH_RESULTS_MAX = 10_000
FILTER_GROUPS_MAX, FILTERS_PER_GROUP, FILTERS_MAX = 5, 10, 25  # HubSpot's search limits since August 2024
# Properties each object has in a fresh portal (the stand-in refuses others, as HubSpot does).
DEFAULT_PROPERTIES: dict[str, set[str]] = {
    "deal": {"dealname", "amount", "deal_currency_code", "dealstage", "pipeline", "closedate", "description",
             "hubspot_owner_id", "invoice_id", "hs_object_id", "hs_lastmodifieddate", "createdate"},
    "company": {"name", "domain", "address", "address2", "city", "state", "zip", "country", "phone",
                "stripe_customer_id", "hs_object_id", "hs_lastmodifieddate", "createdate"},
    "contact": {"firstname", "lastname", "email", "phone", "company", "hs_object_id", "lastmodifieddate",
                "createdate"},
    "line_item": {"name", "hs_sku", "quantity", "price", "amount", "discount", "hs_discount_percentage", "tax",
                  "hs_tax_rate", "hs_line_item_currency_code", "description", "hs_product_id",
                  "hs_recurring_billing_period", "recurringbillingfrequency", "hs_position_on_quote",
                  "hs_object_id", "hs_lastmodifieddate", "createdate"},
    "quote": {"hs_title", "hs_quote_amount", "hs_currency", "hs_status", "hs_payment_status", "hs_esign_date",
              "hs_esign_num_signers_completed", "hs_esign_num_signers_required", "hs_expiration_date",
              "invoice_id", "hs_object_id", "hs_lastmodifieddate", "createdate"},
    "commerce_payment": {"hs_initial_amount", "hs_currency_code", "hs_latest_status", "hs_payment_method_type",
                         "hs_payment_source", "hs_reference_number", "hs_initiated_date", "invoice_id",
                         "hs_object_id", "hs_lastmodifieddate", "createdate"},
    "invoice": {"hs_number", "hs_amount_billed", "hs_currency", "hs_invoice_status", "hs_object_id",
                "hs_lastmodifieddate", "createdate"},
}
# Properties of type datetime in a fresh portal (every object); custom ones say their type in add_property.
DATETIME_PROPERTIES = frozenset({"closedate", "createdate", "hs_lastmodifieddate", "lastmodifieddate"})


@dataclass(frozen=True)
class RecordedPatch:
    object: str
    id: str
    properties: dict[str, str]


@dataclass
class _Grant:
    refresh_token: str
    access_tokens: set[str] = field(default_factory=set)


class FakeHubSpot(FakeServer):
    name = "hubspot"

    def __init__(self, *, token: str = DEFAULT_TOKEN, portal_id: int = 62515,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.token = token
        self.portal_id = portal_id
        self.clock = clock
        self.contract = HubSpotContract()
        self.properties = {k: set(v) for k, v in DEFAULT_PROPERTIES.items()}
        self.property_types: dict[tuple[str, str], str] = {}  # (object, property) -> "date" | "datetime"
        self.records: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in DEFAULT_PROPERTIES}
        self.associations: dict[tuple[str, str, str], list[str]] = {}
        self.patches: list[RecordedPatch] = []
        self.search_calls: list[float] = []
        self.refreshes = 0
        self._grants: dict[str, _Grant] = {}
        self._next_id = 1000
        self._id_lock = threading.Lock()
        objects = "|".join(sorted({*BY_PATH, "0-3"}))
        self.route("POST", r"/oauth/v1/token", self._token)
        self.route("GET", r"/crm/v3/objects/(deals|0-3)", self._checked(self._list))
        self.route("POST", r"/crm/v3/objects/line_items/batch/read", self._checked(self._batch_read))
        self.route("POST", rf"/crm/v3/objects/({objects})/search", self._checked(self._search))
        self.route("GET", rf"/crm/v3/objects/({objects})/([^/]+)", self._checked(self._get))
        self.route("PATCH", rf"/crm/v3/objects/({objects})/([^/]+)", self._checked(self._patch))
        self.route("GET", r"/crm/v4/objects/([^/]+)/([^/]+)/associations/([^/]+)", self._checked(self._associated))

    # --- seeding -----------------------------------------------------------------------------------
    def new_id(self) -> str:
        with self._id_lock:
            self._next_id += 1
            return str(self._next_id)

    def add(
        self, object_name: str, properties: Mapping[str, Any], *, id: str | None = None,
        associations: Mapping[str, Iterable[str]] | None = None, modified_at: datetime | None = None,
    ) -> str:
        """Hold a record (properties as HubSpot stores them: strings); returns its id. `associations` maps an
        object name to ids, associated in that order (both ways)."""
        name = _name(object_name)
        unknown = set(properties) - self.properties[name]
        if unknown:
            raise ValueError(f"a fresh portal's {name} has no properties {sorted(unknown)}")
        record_id = id or self.new_id()
        when = modified_at or datetime.now(UTC)
        stamp = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        props, problems = self._stored(name, properties)
        if problems:
            raise ValueError("; ".join(problems))
        props.update(hs_object_id=record_id, createdate=stamp)
        props["lastmodifieddate" if name == "contact" else "hs_lastmodifieddate"] = stamp
        with self._lock:
            self.records[name][record_id] = {"id": record_id, "properties": props, "createdAt": stamp,
                                             "updatedAt": stamp, "archived": False}
        for other, ids in (associations or {}).items():
            for other_id in ids:
                self.associate(name, record_id, _name(other), other_id)
        return record_id

    def associate(self, from_object: str, from_id: str, to_object: str, to_id: str) -> None:
        with self._lock:
            for key, value in (((from_object, from_id, to_object), to_id), ((to_object, to_id, from_object), from_id)):
                ids = self.associations.setdefault(key, [])
                if value not in ids:
                    ids.append(value)

    def set_properties(self, object_name: str, record_id: str, properties: Mapping[str, Any], *,
                       modified_at: datetime | None = None) -> None:
        """Change a record as a user in HubSpot would (its last modification moves to `modified_at` or now)."""
        name = _name(object_name)
        props, problems = self._stored(name, properties)
        if problems:
            raise ValueError("; ".join(problems))
        stamp = (modified_at or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        with self._lock:
            record = self.records[name][record_id]
            record["properties"].update(props)
            record["properties"]["lastmodifieddate" if name == "contact" else "hs_lastmodifieddate"] = stamp
            record["updatedAt"] = stamp

    def add_property(self, object_name: str, name: str, type: str = "string") -> None:
        """A custom property of the portal; type "date" or "datetime" for dates (see the module docstring)."""
        self.properties[_name(object_name)].add(name)
        if type in ("date", "datetime"):
            self.property_types[(_name(object_name), name)] = type

    def property_type(self, object_name: str, name: str) -> str:
        if name in DATETIME_PROPERTIES:
            return "datetime"
        return self.property_types.get((object_name, name), "string")

    def _stored(self, object_name: str, properties: Mapping[str, Any]) -> tuple[dict[str, str | None], list[str]]:
        """Property values as HubSpot stores them (strings; dates in their canonical text), and what it refuses."""
        stored: dict[str, str | None] = {}
        problems: list[str] = []
        for key, value in properties.items():
            if value is None or value == "":
                stored[key] = None if value is None else ""
                continue
            kind = self.property_type(object_name, key)
            text, problem = _date_text(str(value), kind) if kind != "string" else (str(value), "")
            if problem:
                problems.append(f"{key}: {problem}")
            stored[key] = text
        return stored, problems

    # --- what tests read ---------------------------------------------------------------------------
    def get(self, object_name: str, record_id: str) -> dict[str, Any] | None:
        with self._lock:
            record = self.records[_name(object_name)].get(record_id)
            return copy.deepcopy(record) if record else None

    def patched(self, object_name: str, record_id: str) -> dict[str, str]:
        merged: dict[str, str] = {}
        for patch in self.patches:
            if patch.object == _name(object_name) and patch.id == record_id:
                merged.update(patch.properties)
        return merged

    def connection_settings(self, *, oauth: bool = False) -> dict[str, Any]:
        """The secret billflow keeps for a HubSpot connection to this portal: a private app token, or OAuth."""
        # The portal's own properties billflow writes back (and so must read): see DEFAULT_PROPERTIES.
        read = {"deal": ["invoice_id"], "company": ["stripe_customer_id"], "quote": ["invoice_id"],
                "commerce_payment": ["invoice_id"]}
        if not oauth:
            return {"type": "hubspot", "base_url": self.url, "private_app_token": self.token,
                    "portal_id": str(self.portal_id), "properties": read}
        refresh = secrets.token_urlsafe(16)
        with self._lock:
            self._grants[refresh] = _Grant(refresh)
        return {"type": "hubspot", "base_url": self.url, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                "refresh_token": refresh, "portal_id": str(self.portal_id), "properties": read}

    def connection(self, name: str = "hubspot", **kwargs: Any) -> Connection:
        return Connection(name=name, type="hubspot", settings=self.connection_settings(**kwargs))

    # --- serving -----------------------------------------------------------------------------------
    def _authorized(self, req: Request) -> bool:
        scheme, _, token = (req.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        with self._lock:
            return token == self.token or any(token in g.access_tokens for g in self._grants.values())

    def _checked(self, handler: Callable[..., Response]) -> Callable[..., Response]:
        def serve(req: Request, *groups: str) -> Response:
            if not self._authorized(req):
                self.violate(f"{req.method} {req.path}: 401, missing or wrong token")
                return _error(401, "Authentication credentials not found.", "INVALID_AUTHENTICATION")
            problems = self.contract.check_request(req.method, req.path, req.query, req.headers, req.body)
            if problems:
                for problem in problems:
                    self.violate(f"{req.method} {req.path}: {problem}")
                return _error(400, "; ".join(problems), "VALIDATION_ERROR")
            answer = handler(req, *groups)
            if answer.status != 429:  # the rate limiter answers before the operation (not in the specs)
                for problem in self.contract.check_response(req.method, req.path, answer.status, answer.body):
                    self.violate(f"{req.method} {req.path}: answer {answer.status} is not HubSpot's: {problem}")
            return answer

        return serve

    def _record(self, name: str, record_id: str, properties: list[str] | None) -> dict[str, Any] | None:
        record = self.records[name].get(record_id)
        if record is None:
            return None
        out = copy.deepcopy(record)
        if properties is not None:  # HubSpot answers the asked properties that exist, and hs_object_id
            keep = set(properties) | {"hs_object_id", "createdate", "hs_lastmodifieddate", "lastmodifieddate"}
            out["properties"] = {k: v for k, v in out["properties"].items() if k in keep}
        return out

    def _get(self, req: Request, path: str, record_id: str) -> Response:
        name = _name(path)
        asked = (req.query.get("properties") or [""])[-1]
        record = self._record(name, record_id, [p for p in asked.split(",") if p] or None)
        if record is None:
            return _error(404, "Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND")
        return Response(200, record)

    def _list(self, req: Request, path: str) -> Response:
        limit = int((req.query.get("limit") or ["10"])[-1])
        results = [self._record("deal", i, None) for i in list(self.records["deal"])[:limit]]
        return Response(200, {"results": results})

    def _patch(self, req: Request, path: str, record_id: str) -> Response:
        name = _name(path)
        body = req.json() or {}
        properties = body.get("properties") or {}
        unknown = sorted(set(properties) - self.properties[name])
        if unknown:
            self.violate(f"{req.method} {req.path}: properties {unknown} do not exist on {name}")
            return _error(400, f"Property values were not valid: {unknown} do not exist", "VALIDATION_ERROR")
        record = self.records[name].get(record_id)
        if record is None:
            return _error(404, "Object not found.", "OBJECT_NOT_FOUND")
        stored, problems = self._stored(name, properties)
        if problems:
            self.violate(f"{req.method} {req.path}: {'; '.join(problems)}")
            return _error(400, f"Property values were not valid: {'; '.join(problems)}", "VALIDATION_ERROR")
        record["properties"].update(stored)
        record["updatedAt"] = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        record["properties"]["lastmodifieddate" if name == "contact" else "hs_lastmodifieddate"] = record["updatedAt"]
        self.patches.append(RecordedPatch(name, record_id, dict(properties)))
        return Response(200, copy.deepcopy(record))

    def _batch_read(self, req: Request) -> Response:
        body = req.json() or {}
        inputs = body.get("inputs") or []
        if len(inputs) > 100:
            return _error(400, "Batch read takes at most 100 inputs", "VALIDATION_ERROR")
        properties = body.get("properties") or None
        results = [r for r in (self._record("line_item", str(i.get("id")), properties) for i in inputs) if r]
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return Response(200, {"status": "COMPLETE", "results": results, "startedAt": now, "completedAt": now})

    def _associated(self, req: Request, from_type: str, from_id: str, to_type: str) -> Response:
        source, target = hubspot_object(from_type), hubspot_object(to_type)
        if source is None or target is None:
            return _error(400, f"Unknown object type {from_type if source is None else to_type}", "VALIDATION_ERROR")
        ids = self.associations.get((source.name, from_id, target.name), [])
        limit = int((req.query.get("limit") or ["500"])[-1])
        start = int((req.query.get("after") or ["0"])[-1] or 0)
        page = ids[start:start + limit]
        results = [{"toObjectId": i, "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 1}]}
                   for i in page]
        doc: dict[str, Any] = {"results": results}
        if start + limit < len(ids):
            doc["paging"] = {"next": {"after": str(start + limit)}}
        return Response(200, doc)

    def _search(self, req: Request, path: str) -> Response:
        now = self.clock()
        recent = [t for t in self.search_calls if now - t < 1.0]
        self.search_calls.append(now)
        if len(recent) >= SEARCH_PER_SECOND:
            self.violate(f"{req.method} {req.path}: more than {SEARCH_PER_SECOND} search requests in a second")
            return Response(429, {"status": "error", "message": "You have reached your secondly limit.",
                                  "errorType": "RATE_LIMIT", "correlationId": str(uuid.uuid4()),
                                  "policyName": "SECONDLY"}, {"Retry-After": "1"})
        body = req.json() or {}
        limit = int(body.get("limit") or 10)
        after = int(body.get("after") or 0)
        if limit > SEARCH_PAGE_MAX:
            self.violate(f"{req.method} {req.path}: limit {limit} is over {SEARCH_PAGE_MAX}")
            return _error(400, f"limit must be at most {SEARCH_PAGE_MAX}", "VALIDATION_ERROR")
        if after + limit > SEARCH_RESULTS_MAX:
            self.violate(f"{req.method} {req.path}: paging past {SEARCH_RESULTS_MAX} results")
            return _error(400, "Paging past 10000 results is not supported", "VALIDATION_ERROR")
        name = _name(path)
        groups = body.get("filterGroups") or []
        sizes = [len(g.get("filters") or []) for g in groups]
        if len(groups) > FILTER_GROUPS_MAX or any(n > FILTERS_PER_GROUP for n in sizes) or sum(sizes) > FILTERS_MAX:
            self.violate(f"{req.method} {req.path}: {len(groups)} filter groups of {sizes} filters")
            return _error(400, f"At most {FILTER_GROUPS_MAX} filterGroups of {FILTERS_PER_GROUP} filters and "
                               f"{FILTERS_MAX} filters in all", "VALIDATION_ERROR")
        matched = [r for r in self.records[name].values()
                   if not groups or any(all(_holds(r["properties"], f) for f in g.get("filters") or [])
                                        for g in groups)]
        sorts = body.get("sorts") or []
        if sorts:
            key = str(sorts[0]).lstrip("-")
            matched.sort(key=lambda r: (_sortable(r["properties"].get(key)), r["id"]),
                         reverse=str(sorts[0]).startswith("-"))
        page = matched[after:after + limit]
        asked = body.get("properties") or None
        results = [self._record(name, r["id"], asked) for r in page]
        doc: dict[str, Any] = {"total": len(matched), "results": results}
        if after + limit < len(matched):
            doc["paging"] = {"next": {"after": str(after + limit)}}
        return Response(200, doc)

    def _token(self, req: Request) -> Response:
        form = {k: v[-1] for k, v in parse_qs(req.body.decode()).items()}
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return Response(400, {"status": "BAD_CLIENT_ID", "message": "missing or unknown client id"})
        if form.get("grant_type") != "refresh_token":
            return Response(400, {"status": "BAD_GRANT_TYPE", "message": "unsupported grant_type"})
        with self._lock:
            grant = self._grants.get(form.get("refresh_token") or "")
            if grant is None:
                return Response(400, {"status": "BAD_REFRESH_TOKEN", "error": "invalid_grant",
                                      "message": "missing or unknown refresh token"})
            access = secrets.token_urlsafe(24)
            grant.access_tokens.add(access)
            self.refreshes += 1
        # HubSpot's refresh tokens do not rotate: the answer carries the same one.
        return Response(200, {"token_type": "bearer", "refresh_token": grant.refresh_token,
                              "access_token": access, "expires_in": 1800})


def _name(object_name: str) -> str:
    found = hubspot_object(object_name)
    if found is None or found.name not in BY_NAME:
        raise KeyError(f"no HubSpot object {object_name!r}")
    return found.name


def _number(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _sortable(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if (number := _number(_epoch(value))) is not None:
        return (1, number)
    return (2, str(value))


def _epoch(value: Any) -> Any:
    """Dates as HubSpot compares them in search: epoch milliseconds (a date: its midnight UTC)."""
    return _epoch_text(value) if isinstance(value, str) and ("T" in value or _DAY.match(value)) else value


_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@functools.lru_cache(maxsize=65536)
def _epoch_text(value: str) -> Any:
    # Cached: a search compares every record's dates, and a sweep test holds ten thousand records.
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp() * 1000)


def _date_text(value: str, kind: str) -> tuple[str, str]:
    """A date or datetime property's value as HubSpot stores and answers it, or the reason it is refused."""
    text = value.strip()
    if text.isdigit():
        when = datetime.fromtimestamp(int(text) / 1000, UTC)
    else:
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return text, f"{text!r} is not a valid {kind} (epoch milliseconds or ISO 8601)"
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
    when = when.astimezone(UTC)
    if kind == "date":
        if when.time() != datetime.min.time():
            return text, f"{text} is at {when.strftime('%H:%M:%S.%f')[:-3]} UTC, not midnight!"
        return when.date().isoformat(), ""
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z"), ""


def _holds(properties: Mapping[str, Any], condition: Mapping[str, Any]) -> bool:
    actual = properties.get(condition.get("propertyName", ""))
    op = condition.get("operator")
    if op == "HAS_PROPERTY":
        return actual not in (None, "")
    if op == "NOT_HAS_PROPERTY":
        return actual in (None, "")
    if op in ("IN", "NOT_IN"):
        values = [str(v).lower() for v in condition.get("values") or []]
        inside = actual is not None and str(actual).lower() in values
        return inside if op == "IN" else not inside
    if actual in (None, ""):
        return op == "NEQ"
    wanted = condition.get("value")
    left, right = _number(_epoch(actual)), _number(_epoch(wanted))
    if left is None or right is None:
        a, b = str(actual).lower(), str(wanted).lower()
        return {"EQ": a == b, "NEQ": a != b}.get(str(op), False)
    return {"EQ": left == right, "NEQ": left != right, "GT": left > right, "GTE": left >= right,
            "LT": left < right, "LTE": left <= right}.get(str(op), False)


def _error(status: int, message: str, category: str) -> Response:
    return Response(status, {"status": "error", "message": message, "correlationId": str(uuid.uuid4()),
                             "category": category})


def dumps(events: list[dict[str, Any]]) -> bytes:
    """A webhook batch as HubSpot serialises it (compact JSON)."""
    return json.dumps(events, separators=(",", ":")).encode()
