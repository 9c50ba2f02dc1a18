"""A local Zoho Books API (v3) for the operations billflow uses: contacts (list, get, create), items (list,
create), invoices and estimates (list, create) and currencies (list), for one organization.

Zoho publishes no machine-readable contract billflow can pin (see tests/contracts/zoho_books/SOURCE.md), so
requests are checked against the field list written from Zoho's documentation,
tests/contracts/zoho_books/fields.json: each operation's query parameters and body fields become a closed
JSON Schema validated with jsonschema (required fields, types, enums, maximum lengths; an unknown field or
query parameter is refused: Zoho would ignore a misspelt filter and list everything, or drop a misspelt
field, so here it is a violation).

Like Zoho, in this order:
  1. Authorization: Zoho-oauthtoken <token> (401 code 14 without; 401 code 57 for a token that expired or
     was revoked, which is an answer clients handle by refreshing, not a violation);
  2. organization_id on every call, naming this organization (400 code 6041 otherwise);
  3. injected failures (`fail_next`), then Zoho's 100 requests a minute per organization (429 code 44);
  4. the field list (400 code 2 "Invalid value passed for ...", code 4 for a missing required field,
     code 15 for a value too long, code 1038 for a body that is not JSON);
  5. the business rules: known customers, items and currencies, unique contact and item names, unique SKUs,
     numbering (INV-000001, EST-000001), totals rounded to the currency's precision.
Bodies are JSON (application/json) or, as older clients send them, a JSONString form field.
Answers are {"code": 0, "message": ..., "<resource>": ...}; errors {"code": <non-zero>, "message": ...}.
Every request Zoho would refuse is answered that way and recorded in `violations`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jsonschema
from jsonschema.exceptions import ValidationError

from tests.fakes.base import FakeServer, Request, Response

FIELDS_PATH = Path(__file__).resolve().parents[1] / "contracts" / "zoho_books" / "fields.json"
BASE_PATH = "/books/v3"
DEFAULT_TOKEN = "1000.zoho-fake-access-token"
DEFAULT_ORGANIZATION = "10234695"
MINUTE_LIMIT = 100
MAX_PER_PAGE = 200
RATE_LIMITED = "You have made too many requests continuously. Please try again after some time."
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_INTEGER = re.compile(r"^-?\d+$")
_next_id = [460000000026049]


def _new_id() -> str:
    _next_id[0] += 1
    return str(_next_id[0])


class ZohoError(Exception):
    def __init__(self, status: int, code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}

    def response(self) -> Response:
        return Response(self.status, {"code": self.code, "message": self.message}, dict(self.headers))


# --- the field list as JSON Schema -------------------------------------------------------------------
def _is_date(checker: Any, value: Any) -> bool:
    if not isinstance(value, str) or not _DATE.match(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


_types = jsonschema.Draft4Validator.TYPE_CHECKER.redefine("date", _is_date)
FieldValidator = jsonschema.validators.extend(jsonschema.Draft4Validator, type_checker=_types)


def to_schema(spec: dict[str, Any], objects: dict[str, Any]) -> dict[str, Any]:
    """One field spec -> JSON Schema (objects closed)."""
    kind = spec["type"]
    schema: dict[str, Any] = {"type": kind}
    if "enum" in spec:
        schema["enum"] = spec["enum"]
    if "max_length" in spec:
        schema["maxLength"] = spec["max_length"]
    if "maximum" in spec:
        schema["maximum"] = spec["maximum"]
    if kind == "object":
        fields = objects[spec["ref"]] if "ref" in spec else spec.get("fields", {})
        schema.update(object_schema(fields, objects))
    if kind == "array":
        schema["items"] = to_schema(spec["items"], objects)
    return schema


def object_schema(fields: dict[str, Any], objects: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {name: to_schema(spec, objects) for name, spec in fields.items()},
        "additionalProperties": False,
    }
    required = [name for name, spec in fields.items() if spec.get("required")]
    if required:
        schema["required"] = required
    return schema


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str
    path: str
    pattern: re.Pattern[str]
    answer: str
    query: dict[str, Any]  # name -> field spec
    body_schema: dict[str, Any] | None


class ZohoFields:
    """The documented operations, each able to check its query and body."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        objects = doc["objects"]
        self.operations: list[Operation] = []
        for operation_id, op in doc["operations"].items():
            regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(op["path"]))
            body = object_schema(op["body"], objects) if "body" in op else None
            self.operations.append(Operation(
                operation_id, op["method"], op["path"], re.compile(f"^{regex}$"), op["answer"], op["query"],
                body,
            ))

    @classmethod
    def load(cls, path: Path = FIELDS_PATH) -> ZohoFields:
        return _load(str(path))

    def by_id(self, operation_id: str) -> Operation:
        for op in self.operations:
            if op.operation_id == operation_id:
                return op
        raise KeyError(f"no operation {operation_id!r} in the field list")

    def check_query(self, op: Operation, query: dict[str, list[str]]) -> tuple[dict[str, Any], list[ZohoError]]:
        typed: dict[str, Any] = {}
        problems: list[ZohoError] = []
        for name, values in query.items():
            spec = op.query.get(name)
            if spec is None or len(values) != 1:
                problems.append(ZohoError(400, 2, f"Invalid value passed for {name}"))
                continue
            value: Any = values[0]
            kind = spec["type"]
            if kind == "integer" and _INTEGER.match(value):
                value = int(value)
            elif kind == "number":
                with contextlib.suppress(ValueError):
                    value = float(value)
            elif kind == "boolean" and value in ("true", "false"):
                value = value == "true"
            typed[name] = value
            problems += self._problems(to_schema(spec, {}), value, name)
        for name, spec in op.query.items():
            if spec.get("required") and name not in query:
                problems.append(ZohoError(400, 4, f"{name} is required"))
        return typed, problems

    def check_body(self, op: Operation, body: Any) -> list[ZohoError]:
        assert op.body_schema is not None
        return self._problems(op.body_schema, body, "")

    @staticmethod
    def _problems(schema: dict[str, Any], value: Any, prefix: str) -> list[ZohoError]:
        found: list[ZohoError] = []
        for error in sorted(FieldValidator(schema).iter_errors(value), key=lambda e: list(map(str, e.path))):
            found.append(_zoho_error(error, prefix))
        return found


def _zoho_error(error: ValidationError, prefix: str) -> ZohoError:
    names = [str(p) for p in error.absolute_path if not isinstance(p, int)]
    field = names[-1] if names else prefix
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        unknown = [k for k in error.instance if k not in allowed]
        return ZohoError(400, 2, f"Invalid value passed for {unknown[0] if unknown else field}")
    if error.validator == "required":
        missing = re.findall(r"'([^']+)' is a required property", error.message)
        return ZohoError(400, 4, f"{missing[0] if missing else field} is required")
    if error.validator == "maxLength":
        return ZohoError(400, 15, f"Please ensure that the {field} has less than {error.validator_value} "
                                  "characters.")
    return ZohoError(400, 2, f"Invalid value passed for {field}")


@cache
def _load(path: str) -> ZohoFields:
    return ZohoFields(json.loads(Path(path).read_text()))


# --- the fake ---------------------------------------------------------------------------------------
class FakeZohoBooks(FakeServer):
    name = "fake-zoho-books"

    def __init__(
        self, *, organization_id: str = DEFAULT_ORGANIZATION, token: str | None = DEFAULT_TOKEN,
        fields: ZohoFields | None = None, minute_limit: int | None = MINUTE_LIMIT,
        base_currency: str = "USD", currencies: tuple[str, ...] = ("EUR", "GBP", "JPY"),
    ) -> None:
        super().__init__()
        self.fields = fields or ZohoFields.load()
        self.organization_id = organization_id
        self.tokens: dict[str, float | None] = {token: None} if token else {}
        self.token_checker: Callable[[str], str] | None = None
        self.minute_limit = minute_limit
        self.before_request: list[Callable[[Request], None]] = []
        self.currencies: dict[str, dict[str, Any]] = {}
        for code in (base_currency, *currencies):
            self.currencies[_new_id()] = {
                "currency_code": code, "is_base_currency": code == base_currency,
                "price_precision": 0 if code == "JPY" else 2,
            }
        for currency_id, currency in self.currencies.items():
            currency["currency_id"] = currency_id
        self.taxes: dict[str, dict[str, Any]] = {}
        self.contacts: dict[str, dict[str, Any]] = {}
        self.items: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self.estimates: dict[str, dict[str, Any]] = {}
        self.clock: Callable[[], float] = time.time
        self._failures: dict[str, deque[ZohoError]] = defaultdict(deque)
        self._lost_answers: dict[str, int] = defaultdict(int)
        self._calls: deque[float] = deque()
        self._numbers = {"INV": 0, "EST": 0}
        self._handlers: dict[str, Callable[..., Any]] = {
            "listContacts": self._list_contacts, "getContact": self._get_contact,
            "createContact": self._create_contact, "listItems": self._list_items,
            "createItem": self._create_item, "listInvoices": self._list_invoices,
            "createInvoice": self._create_invoice, "listEstimates": self._list_estimates,
            "createEstimate": self._create_estimate, "listCurrencies": self._list_currencies,
            "listOrganizations": self._list_organizations,
        }
        for op in self.fields.operations:
            regex = re.sub(r"\\\{(\w+)\\\}", r"([^/]+)", re.escape(BASE_PATH + op.path))
            self.route(op.method, regex, self._endpoint(op))

    # --- knobs and seeds -------------------------------------------------------------------------
    @property
    def api_domain(self) -> str:
        return self.url

    def accept_token(self, token: str, expires_at: float | None = None) -> None:
        self.tokens[token] = expires_at

    def use_oauth(self, oauth: Any) -> None:
        """Take the access tokens tests/fakes/oauth_server.OAuthFake issues (see FakeXero.use_oauth)."""
        seen: set[str] = set()

        def check(token: str) -> str:
            if oauth.access_token_valid(token):
                seen.add(token)
                return "valid"
            return "expired" if token in seen else "unknown"

        self.token_checker = check

    def fail_next(self, operation_id: str, status: int = 429, *, times: int = 1,
                  retry_after: float | None = None, message: str | None = None, code: int | None = None) -> None:
        self.fields.by_id(operation_id)
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        default_code = {429: 44, 500: 1000}.get(status, 2 if status == 400 else 1000)
        text = message or {429: RATE_LIMITED, 500: "Internal error"}.get(status, "Refused by a test knob.")
        for _ in range(times):
            self._failures[operation_id].append(ZohoError(status, code or default_code, text, headers))

    def lose_next_answer(self, operation_id: str, *, times: int = 1) -> None:
        """The next `times` calls of the operation do their work, but the client gets a 500 instead of the
        answer (as when a connection drops after Zoho committed): the case idempotency must survive."""
        self.fields.by_id(operation_id)
        self._lost_answers[operation_id] += times

    def currency_id(self, code: str) -> str:
        return next(i for i, c in self.currencies.items() if c["currency_code"] == code)

    def add_tax(self, name: str, percentage: float) -> str:
        tax_id = _new_id()
        self.taxes[tax_id] = {"tax_id": tax_id, "tax_name": name, "tax_percentage": percentage}
        return tax_id

    def add_contact(self, name: str, *, email: str | None = None, first_name: str | None = None,
                    last_name: str | None = None, currency: str | None = None, contact_type: str = "customer",
                    status: str = "active") -> dict[str, Any]:
        person = {k: v for k, v in (("email", email), ("first_name", first_name), ("last_name", last_name)) if v}
        body: dict[str, Any] = {"contact_name": name, "contact_type": contact_type}
        if person:
            body["contact_persons"] = [{**person, "is_primary_contact": True}]
        if currency:
            body["currency_id"] = self.currency_id(currency)
        contact = self._new_contact(body)
        contact["status"] = status
        return copy.deepcopy(contact)

    def add_item(self, name: str, *, rate: float = 0, sku: str | None = None, status: str = "active",
                 description: str | None = None) -> dict[str, Any]:
        item = self._new_item({"name": name, "rate": rate, "sku": sku, "description": description})
        item["status"] = status
        return copy.deepcopy(item)

    def calls(self, method: str, path_regex: str) -> list[Request]:
        return super().calls(method, re.escape(BASE_PATH) + path_regex)

    # --- pipeline --------------------------------------------------------------------------------
    def not_found(self, req: Request) -> Response:
        self.violate(f"{req.method} {req.path}: no such operation")
        return ZohoError(404, 5, "Invalid URL Passed").response()

    def _endpoint(self, op: Operation) -> Callable[..., Response]:
        def serve(req: Request, *groups: str) -> Response:
            try:
                return Response(200 if op.method == "GET" else 201, self._serve(op, req, *groups))
            except ZohoError as err:
                return err.response()

        return serve

    def _serve(self, op: Operation, req: Request, *groups: str) -> dict[str, Any]:
        where = f"{req.method} {req.path}"
        for hook in self.before_request:
            hook(req)
        self._authenticate(req, where)
        org = req.query.get("organization_id", [""])[-1]
        if op.operation_id != "listOrganizations" and org != self.organization_id:
            self.violate(f"{where}: organization_id {org!r} is not this organization")
            raise ZohoError(400, 6041, f"This user is not associated with the CompanyID/CompanyName:{org}.")
        if self._failures[op.operation_id]:
            raise self._failures[op.operation_id].popleft()
        self._count_call(where)
        query, problems = self.fields.check_query(op, req.query)
        body: Any = None
        if op.body_schema is not None:
            body = self._body(req, where)
            problems += self.fields.check_body(op, body)
        elif req.body:
            problems.append(ZohoError(400, 2, "Invalid value passed for JSONString"))
        if problems:
            self.violate(f"{where}: " + "; ".join(f"{p.code} {p.message}" for p in problems))
            raise problems[0]
        try:
            answer = self._handlers[op.operation_id](query, body, *groups)
        except ZohoError as err:
            if not (op.operation_id == "getContact" and err.code == 1002):  # a lookup's answer
                self.violate(f"{where}: {err.code} {err.message}")
            raise
        if self._lost_answers[op.operation_id]:
            self._lost_answers[op.operation_id] -= 1
            raise ZohoError(500, 1000, "Internal error")
        return {"code": 0, "message": answer.pop("_message", "success"), **answer}

    def _body(self, req: Request, where: str) -> Any:
        content_type = req.headers.get("content-type", "").split(";")[0].strip().lower()
        raw: str | bytes = req.body
        if content_type == "application/x-www-form-urlencoded":
            form = parse_qs(req.body.decode(), keep_blank_values=True)
            raw = (form.get("JSONString") or [""])[-1]
        elif content_type != "application/json":
            self.violate(f"{where}: body sent as {content_type or 'untyped'}")
            raise ZohoError(400, 2, "Invalid value passed for JSONString")
        try:
            return json.loads(raw)
        except ValueError:
            self.violate(f"{where}: the body is not JSON")
            raise ZohoError(400, 1038, "JSON is not well formed") from None

    def _authenticate(self, req: Request, where: str) -> None:
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        if scheme != "Zoho-oauthtoken" or not token:
            self.violate(f"{where}: no 'Authorization: Zoho-oauthtoken ...' header")
            raise ZohoError(401, 14, "The request could not be authenticated as the authentication value you "
                                     "entered is invalid. Enter a valid authentication value and try again.")
        if self.token_checker is not None:
            state = self.token_checker(token)
        elif token in self.tokens:
            expires = self.tokens[token]
            state = "expired" if expires is not None and expires <= self.clock() else "valid"
        else:
            state = "unknown"
        if state == "valid":
            return
        if state != "expired":
            self.violate(f"{where}: an access token Zoho never issued")
        raise ZohoError(401, 57, "You are not authorized to perform this operation")

    def _count_call(self, where: str) -> None:
        if self.minute_limit is None:
            return
        now = self.clock()
        while self._calls and self._calls[0] <= now - 60:
            self._calls.popleft()
        if len(self._calls) >= self.minute_limit:
            self.violate(f"{where}: more than {self.minute_limit} requests in a minute")
            raise ZohoError(429, 44, RATE_LIMITED)
        self._calls.append(now)

    def _today(self) -> date:
        return datetime.fromtimestamp(self.clock(), UTC).date()

    def _stamp(self) -> str:
        return datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%S+0000")

    # --- contacts --------------------------------------------------------------------------------
    def _new_contact(self, body: dict[str, Any]) -> dict[str, Any]:
        currency_id = body.get("currency_id") or next(
            i for i, c in self.currencies.items() if c["is_base_currency"])
        persons = [{**p, "contact_person_id": _new_id()} for p in body.get("contact_persons") or []]
        primary = next((p for p in persons if p.get("is_primary_contact")), persons[0] if persons else {})
        contact = {
            **copy.deepcopy(body),
            "contact_id": _new_id(),
            "contact_type": body.get("contact_type", "customer"),
            "customer_sub_type": body.get("customer_sub_type", "business"),
            "status": "active",
            "currency_id": currency_id,
            "currency_code": self.currencies[currency_id]["currency_code"],
            "payment_terms": body.get("payment_terms", 0),
            "first_name": primary.get("first_name", ""), "last_name": primary.get("last_name", ""),
            "email": primary.get("email", ""), "contact_persons": persons,
            "created_time": self._stamp(), "last_modified_time": self._stamp(),
        }
        self.contacts[contact["contact_id"]] = contact
        return contact

    def _list_contacts(self, query: dict[str, Any], body: Any) -> dict[str, Any]:
        found = [c for c in self.contacts.values() if _status_filter(c, query.get("filter_by"))]
        for name in ("contact_name", "company_name", "first_name", "last_name", "email", "phone"):
            found = _filter(found, name, query)
        if query.get("search_text"):
            text = query["search_text"].casefold()
            found = [c for c in found if any(text in str(c.get(f) or "").casefold()
                                             for f in ("contact_name", "company_name", "email"))]
        return _page("contacts", found, query)

    def _get_contact(self, query: dict[str, Any], body: Any, contact_id: str) -> dict[str, Any]:
        contact = self.contacts.get(contact_id)
        if contact is None:
            raise ZohoError(404, 1002, "Contact does not exist.")
        return {"contact": copy.deepcopy(contact)}

    def _create_contact(self, query: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        name = body["contact_name"].strip()
        if not name:
            raise ZohoError(400, 4, "contact_name is required")
        if any(c["contact_name"].casefold() == name.casefold() for c in self.contacts.values()):
            raise ZohoError(400, 3062, f'The contact "{name}" already exists. Please specify a different name.')
        if body.get("currency_id") and body["currency_id"] not in self.currencies:
            raise ZohoError(400, 2, "Invalid value passed for currency_id")
        primaries = [p for p in body.get("contact_persons") or [] if p.get("is_primary_contact")]
        if len(primaries) > 1:
            raise ZohoError(400, 2, "Invalid value passed for is_primary_contact")
        return {"contact": copy.deepcopy(self._new_contact(body)), "_message": "The contact has been added."}

    # --- items -----------------------------------------------------------------------------------
    def _new_item(self, body: dict[str, Any]) -> dict[str, Any]:
        item = {
            **{k: v for k, v in copy.deepcopy(body).items() if v is not None},
            "item_id": _new_id(), "status": "active", "item_type": body.get("item_type", "sales"),
            "product_type": body.get("product_type", "goods"),
            "created_time": self._stamp(), "last_modified_time": self._stamp(),
        }
        self.items[item["item_id"]] = item
        return item

    def _list_items(self, query: dict[str, Any], body: Any) -> dict[str, Any]:
        found = [i for i in self.items.values() if _status_filter(i, query.get("filter_by"))]
        found = _filter(found, "name", query)
        found = _filter(found, "description", query)
        if query.get("search_text"):  # Zoho: "Search items by name or description." (not by SKU)
            text = query["search_text"].casefold()
            found = [i for i in found if any(text in str(i.get(f) or "").casefold()
                                             for f in ("name", "description"))]
        return _page("items", found, query)

    def _create_item(self, query: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        name = body["name"].strip()
        if any(i["name"].casefold() == name.casefold() for i in self.items.values()):
            raise ZohoError(400, 1001, f'The item "{name}" already exists.')
        sku = body.get("sku")
        if sku and any((i.get("sku") or "").casefold() == sku.casefold() for i in self.items.values()):
            raise ZohoError(400, 1001, f'The SKU "{sku}" already exists.')
        if body.get("tax_id") and body["tax_id"] not in self.taxes:
            raise ZohoError(400, 2, "Invalid value passed for tax_id")
        return {"item": copy.deepcopy(self._new_item(body)), "_message": "The item has been added."}

    # --- invoices and estimates ------------------------------------------------------------------
    def _list_invoices(self, query: dict[str, Any], body: Any) -> dict[str, Any]:
        return _page("invoices", self._documents(self.invoices, "invoice_number", query), query)

    def _list_estimates(self, query: dict[str, Any], body: Any) -> dict[str, Any]:
        return _page("estimates", self._documents(self.estimates, "estimate_number", query), query)

    @staticmethod
    def _documents(store: dict[str, dict[str, Any]], number: str, query: dict[str, Any]) -> list[dict[str, Any]]:
        found = list(store.values())
        for name in (number, "reference_number", "customer_name"):
            found = _filter(found, name, query)
        for name in ("customer_id", "status", "date"):
            if name in query:
                found = [d for d in found if d.get(name) == query[name]]
        return [{k: d[k] for k in d if k != "line_items"} for d in found]  # lists give summaries

    def _create_invoice(self, query: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        invoice = self._document(body, "invoice", query)
        return {"invoice": invoice, "_message": "The invoice has been created."}

    def _create_estimate(self, query: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        estimate = self._document(body, "estimate", query)
        return {"estimate": estimate, "_message": "The estimate has been created."}

    def _document(self, body: dict[str, Any], kind: str, query: dict[str, Any]) -> dict[str, Any]:
        customer = self.contacts.get(body["customer_id"])
        if customer is None or customer["contact_type"] != "customer":
            raise ZohoError(400, 1002, "Customer does not exist.")
        if customer["status"] != "active":
            raise ZohoError(400, 2, "Invalid value passed for customer_id")
        if body.get("currency_id") and body["currency_id"] != customer["currency_id"]:
            raise ZohoError(400, 2, "Invalid value passed for currency_id")
        if not body["line_items"]:
            raise ZohoError(400, 4, "line_items is required")
        currency = self.currencies[customer["currency_id"]]
        if not currency["is_base_currency"] and body.get("exchange_rate") is None:
            # Zoho: exchange_rate is "Required when the invoice currency differs from the organization's
            # base currency."
            raise ZohoError(400, 4, "exchange_rate is required for an invoice in another currency than the "
                                    "organization's base currency")
        places = Decimal(1).scaleb(-currency["price_precision"])
        store, prefix, number = (self.invoices, "INV", "invoice_number") if kind == "invoice" \
            else (self.estimates, "EST", "estimate_number")
        if body.get(number) and any(d[number] == body[number] for d in store.values()):
            raise ZohoError(400, 1001, f"{kind.capitalize()} number {body[number]} already exists.")
        lines = []
        sub_total = tax_total = Decimal(0)
        for order, given in enumerate(body["line_items"], start=1):
            item = self.items.get(given["item_id"]) if given.get("item_id") else None
            if given.get("item_id") and item is None:
                raise ZohoError(400, 1002, "Item does not exist.")
            if item is None and not (given.get("name") or given.get("description")):
                raise ZohoError(400, 2, "Invalid value passed for line_items")
            rate = Decimal(str(given.get("rate", (item or {}).get("rate", 0)))).quantize(places, ROUND_HALF_UP)
            quantity = Decimal(str(given.get("quantity", 1)))
            total = (rate * quantity).quantize(places, ROUND_HALF_UP)
            discount = Decimal(str(given.get("discount", 0))).quantize(places, ROUND_HALF_UP)
            if discount and body.get("discount_type") != "item_level":
                # Zoho reads a line's discount only with discount_type item_level (entity_level: the document's)
                raise ZohoError(400, 2, "Invalid value passed for discount: set discount_type to item_level")
            if discount < 0 or discount > total:
                raise ZohoError(400, 2, "Invalid value passed for discount")
            total -= discount
            tax_id = given.get("tax_id")
            if tax_id and tax_id not in self.taxes:
                raise ZohoError(400, 2, "Invalid value passed for tax_id")
            percent = Decimal(str(self.taxes[tax_id]["tax_percentage"])) if tax_id else Decimal(0)
            tax = (total * percent / 100).quantize(places, ROUND_HALF_UP)
            sub_total += total
            tax_total += tax
            lines.append({
                "line_item_id": _new_id(), "item_id": given.get("item_id", ""),
                "name": given.get("name") or (item or {}).get("name", ""),
                "description": given.get("description", (item or {}).get("description", "")),
                "item_order": order, "rate": float(rate), "quantity": float(quantity),
                "discount": float(discount), "discount_amount": float(discount), "item_total": float(total),
                "tax_id": tax_id or "", "tax_percentage": float(percent),
                "sku": (item or {}).get("sku", ""),
            })
        day = date.fromisoformat(body["date"]) if body.get("date") else self._today()
        self._numbers[prefix] += 1
        doc_id = _new_id()
        document: dict[str, Any] = {
            **{k: v for k, v in copy.deepcopy(body).items() if k != "line_items"},
            f"{kind}_id": doc_id,
            number: body.get(number) or f"{prefix}-{self._numbers[prefix]:06d}",
            "status": "sent" if query.get("send") else "draft",
            "date": day.isoformat(),
            "customer_name": customer["contact_name"],
            "currency_id": customer["currency_id"], "currency_code": currency["currency_code"],
            "reference_number": body.get("reference_number", ""),
            "line_items": lines,
            "sub_total": float(sub_total), "tax_total": float(tax_total),
            "total": float(sub_total + tax_total),
            "created_time": self._stamp(), "last_modified_time": self._stamp(),
        }
        if kind == "invoice":
            terms = body.get("payment_terms", customer.get("payment_terms", 0))
            document["payment_terms"] = terms
            document["due_date"] = body.get("due_date") or (day + timedelta(days=terms)).isoformat()
            document["balance"] = document["total"]
            document["invoice_url"] = f"https://books.zoho.com/portal/billflow/secure?CInvoiceID={doc_id}"
        else:
            document["expiry_date"] = body.get("expiry_date", "")
        store[doc_id] = document
        return copy.deepcopy(document)

    def _list_organizations(self, query: dict[str, Any], body: Any) -> dict[str, Any]:
        base = next(c for c in self.currencies.values() if c["is_base_currency"])
        return {"organizations": [{
            "organization_id": self.organization_id, "name": "Billflow Test Org", "contact_name": "Owner",
            "email": "owner@billflow.test", "is_default_org": True, "language_code": "en",
            "time_zone": "Etc/UTC", "is_org_active": True, "currency_id": base["currency_id"],
            "currency_code": base["currency_code"], "price_precision": base["price_precision"]}]}

    def _list_currencies(self, query: dict[str, Any], body: Any) -> dict[str, Any]:
        found = list(self.currencies.values())
        if query.get("filter_by") == "Currencies.ExcludeBaseCurrency":
            found = [c for c in found if not c["is_base_currency"]]
        return {"currencies": copy.deepcopy(found)}


def _status_filter(record: dict[str, Any], filter_by: str | None) -> bool:
    if filter_by in (None, "Status.All"):
        return True
    return record.get("status") == {"Status.Active": "active", "Status.Inactive": "inactive"}.get(filter_by)


def _filter(found: list[dict[str, Any]], name: str, query: dict[str, Any]) -> list[dict[str, Any]]:
    """Zoho's exact, _startswith and _contains variants of a text filter, without regard to case."""
    def text(record: dict[str, Any]) -> str:
        return str(record.get(name) or "").casefold()

    if name in query:
        found = [r for r in found if text(r) == str(query[name]).casefold()]
    if f"{name}_startswith" in query:
        found = [r for r in found if text(r).startswith(str(query[f"{name}_startswith"]).casefold())]
    if f"{name}_contains" in query:
        found = [r for r in found if str(query[f"{name}_contains"]).casefold() in text(r)]
    return found


def _page(name: str, found: list[dict[str, Any]], query: dict[str, Any]) -> dict[str, Any]:
    per_page = min(int(query.get("per_page") or MAX_PER_PAGE), MAX_PER_PAGE)
    page = max(1, int(query.get("page") or 1))
    chunk = found[(page - 1) * per_page: page * per_page]
    return {name: copy.deepcopy(chunk), "page_context": {
        "page": page, "per_page": per_page, "has_more_page": page * per_page < len(found),
        "applied_filter": query.get("filter_by", "Status.All"), "sort_column": query.get("sort_column", ""),
        "sort_order": "A",
    }}
