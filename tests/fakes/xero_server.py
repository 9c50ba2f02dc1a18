"""A local Xero accounting API (api.xro/2.0) for the operations billflow uses: contacts (list, create),
items (list, create), invoices (create) and quotes (create), for one or more organisations (tenants).

Like Xero, in this order:
  1. OAuth 2.0 bearer tokens (401 with WWW-Authenticate when missing, unknown or expired; an expired or
     revoked token is an answer, not a violation: clients learn that way that they must refresh);
  2. the xero-tenant-id header naming an organisation the token may use (403 otherwise);
  3. injected failures (`fail_next`: 429 with Retry-After and X-Rate-Limit-Problem, 5xx, or a 400), then
     Xero's own per-organisation limit of 60 calls in any 60 seconds (429, Retry-After);
  4. every request validated against the operation in the trimmed official spec by xero_contract
     (PostDataInvalidException naming the element);
  5. Idempotency-Key (at most 128 characters): the first answer of a PUT is saved per organisation and
     key, and replayed for the same request; the same key with another request answers 400;
  6. the business rules Xero applies (ValidationException with Elements[].ValidationErrors[].Message):
     unique active contact names, item codes, known account codes, tax types and currencies, statuses
     allowed on create, line items complete enough for SUBMITTED and AUTHORISED invoices, totals and tax
     computed the way Xero does (LineAmountTypes Exclusive, Inclusive or NoTax; 2 decimals, 4 with
     unitdp=4 for unit amounts).

Filters: `where` understands the expressions billflow sends (Field=="value" joined with AND or &&, the
Dynamic LINQ string escape "" for a quote, .Contains("...") and .StartsWith("...")), compared without
regard to case as Xero's SQL collation does; IDs, searchTerm and includeArchived as documented.

Every request Xero would refuse is answered in Xero's shape and recorded in `violations`. The wording of
validation messages follows Xero's where known; treat it as indicative, not contractual.
"""

from __future__ import annotations

import copy
import json
import re
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from tests.fakes.base import FakeServer, Request, Response
from tests.fakes.xero_contract import Operation, XeroContract

BASE_PATH = "/api.xro/2.0"
DEFAULT_TOKEN = "xero-fake-access-token"
MAX_IDEMPOTENCY_KEY = 128  # "128 character max." (components/parameters/idempotencyKey)
MINUTE_LIMIT = 60
PAGE_SIZE = 100
PROVIDER = "billflow tests"
CREATABLE_INVOICE_STATUSES = ("DRAFT", "SUBMITTED", "AUTHORISED")
CREATABLE_QUOTE_STATUSES = ("DRAFT", "SENT")
CONTACT_FIELDS = ("ContactID", "Name", "FirstName", "LastName", "EmailAddress", "ContactNumber",
                  "AccountNumber", "ContactStatus", "IsCustomer", "IsSupplier")
ITEM_FIELDS = ("ItemID", "Code", "Name", "IsSold", "IsPurchased", "Description")
SEARCH_FIELDS = ("Name", "FirstName", "LastName", "ContactNumber", "EmailAddress")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
TWO = Decimal("0.01")


class XeroError(Exception):
    """Raised by a handler; answered in one of Xero's error shapes."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(str(body))
        self.status, self.body, self.headers = status, body, headers or {}

    def response(self) -> Response:
        return Response(self.status, self.body, dict(self.headers))


def validation_error(elements: list[dict[str, Any]]) -> XeroError:
    return XeroError(400, {"ErrorNumber": 10, "Type": "ValidationException",
                           "Message": "A validation exception occurred", "Elements": elements})


def post_data_invalid(message: str) -> XeroError:
    return XeroError(400, {"ErrorNumber": 14, "Type": "PostDataInvalidException", "Message": message})


def query_parse_error(message: str) -> XeroError:
    return XeroError(400, {"ErrorNumber": 16, "Type": "QueryParseException", "Message": message})


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> XeroError:
    """Xero's identity and gateway errors (401, 403, 429, 5xx) are RFC 7807 problem documents."""
    return XeroError(status, {"Type": None, "Title": title, "Status": status, "Detail": detail}, headers)


# --- Xero's date formats -----------------------------------------------------------------------------
def ms_date(day: date) -> str:
    """Xero's JSON dates: /Date(<ms since epoch>+0000)/."""
    stamp = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
    return f"/Date({int(stamp * 1000)}+0000)/"


def ms_datetime(moment: float) -> str:
    return f"/Date({int(moment * 1000)}+0000)/"


def parse_date(value: Any) -> date | None:
    """What Xero reads as a date: 2024-01-31, 2024-01-31T00:00:00, /Date(1706659200000+0000)/."""
    if not isinstance(value, str):
        return None
    match = re.fullmatch(r"/Date\((-?\d+)([+-]\d{4})?\)/", value)
    if match:
        return datetime.fromtimestamp(int(match.group(1)) / 1000, UTC).date()
    try:
        return datetime.fromisoformat(value).date()
    except ValueError:
        return None


# --- where filters --------------------------------------------------------------------------------
_TOKEN = re.compile(r"""\s*(?:(?P<str>"(?:[^"]|"")*")|(?P<op>==|!=|&&|\(|\)|\.)|(?P<word>[A-Za-z_][A-Za-z0-9_]*))""")


@dataclass(frozen=True)
class Clause:
    field: str
    op: str  # ==, !=, Contains, StartsWith
    value: Any
    lower: bool = False


def parse_where(text: str, fields: tuple[str, ...]) -> list[Clause]:
    """Clauses joined by AND / &&: Field=="v", Field.ToLower()=="v", Field.Contains("v"),
    Field.StartsWith("v"), Field==true, Field!=null. Strings escape a quote by doubling it."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            if text[pos:].strip() == "":
                break
            raise query_parse_error(f"Unexpected character in where filter at position {pos}: {text[pos:pos+10]!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    clauses: list[Clause] = []
    i = 0

    def expect(kind: str, value: str | None = None) -> str:
        nonlocal i
        if i >= len(tokens) or tokens[i][0] != kind or (value is not None and tokens[i][1] != value):
            got = tokens[i][1] if i < len(tokens) else "the end"
            raise query_parse_error(f"Syntax error in where filter near {got!r}")
        i += 1
        return tokens[i - 1][1]

    while True:
        name = expect("word")
        if name not in fields:
            raise query_parse_error(f"No property or field '{name}' exists in type (known: {', '.join(fields)})")
        lower = False
        if i < len(tokens) and tokens[i] == ("op", "."):
            i += 1
            method = expect("word")
            if method == "ToLower":
                expect("op", "(")
                expect("op", ")")
                lower = True
            elif method in ("Contains", "StartsWith"):
                expect("op", "(")
                literal = expect("str")
                expect("op", ")")
                clauses.append(Clause(name, method, literal[1:-1].replace('""', '"')))
                if not _next_is_and(tokens, i):
                    break
                i += 1
                continue
            else:
                raise query_parse_error(f"No applicable method '{method}' exists in type 'String'")
        op = expect("op")
        if op not in ("==", "!="):
            raise query_parse_error(f"Syntax error in where filter near {op!r}")
        if i < len(tokens) and tokens[i][0] == "str":
            value: Any = tokens[i][1][1:-1].replace('""', '"')
        elif i < len(tokens) and tokens[i][0] == "word" and tokens[i][1] in ("true", "false", "null"):
            value = {"true": True, "false": False, "null": None}[tokens[i][1]]
        else:
            raise query_parse_error("Expected a value after the operator in where filter")
        i += 1
        clauses.append(Clause(name, op, value, lower))
        if not _next_is_and(tokens, i):
            break
        i += 1
    if i != len(tokens):
        raise query_parse_error(f"Syntax error in where filter near {tokens[i][1]!r}")
    return clauses


def _next_is_and(tokens: list[tuple[str, str]], i: int) -> bool:
    return i < len(tokens) and tokens[i][1] in ("&&", "AND", "and")


def _fold(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def matches(record: dict[str, Any], clauses: list[Clause]) -> bool:
    for clause in clauses:
        have = _fold(record.get(clause.field))
        want = _fold(clause.value)
        if clause.op == "==" and have != want:
            return False
        if clause.op == "!=" and have == want:
            return False
        if clause.op == "Contains" and not (isinstance(have, str) and want in have):
            return False
        if clause.op == "StartsWith" and not (isinstance(have, str) and have.startswith(want)):
            return False
    return True


# --- the fake ---------------------------------------------------------------------------------------
@dataclass
class _Saved:
    fingerprint: str
    response: Response


@dataclass
class Organisation:
    tenant_id: str
    name: str
    base_currency: str = "USD"
    country_code: str = "US"
    sales_tax_basis: str = "ACCRUALS"
    tax_number: str | None = None


class FakeXero(FakeServer):
    name = "fake-xero"

    def __init__(
        self, *, tenant_id: str | None = None, token: str | None = DEFAULT_TOKEN,
        contract: XeroContract | None = None, minute_limit: int | None = MINUTE_LIMIT,
        base_currency: str = "USD", currencies: tuple[str, ...] = ("EUR", "GBP", "JPY", "KWD"),
    ) -> None:
        super().__init__()
        self.contract = contract or XeroContract.load()
        self.tenant_id = tenant_id or str(uuid.uuid4())
        self.organisation = Organisation(self.tenant_id, "Billflow Test Org", base_currency)
        self.currencies = {base_currency, *currencies}
        # access token -> expiry (epoch seconds, None: never); see accept_token, token_checker
        self.tokens: dict[str, float | None] = {token: None} if token else {}
        self.token_checker: Callable[[str], str] | None = None  # token -> "valid" | "expired" | "unknown"
        self.minute_limit = minute_limit
        self.before_request: list[Callable[[Request], None]] = []  # test hooks, run first on every call
        self.contacts: dict[str, dict[str, Any]] = {}
        self.items: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self.quotes: dict[str, dict[str, Any]] = {}
        self.accounts: dict[str, dict[str, Any]] = {
            "200": {"Code": "200", "Name": "Sales", "Type": "REVENUE", "TaxType": "OUTPUT"},
            "260": {"Code": "260", "Name": "Other Revenue", "Type": "REVENUE", "TaxType": "OUTPUT"},
            "400": {"Code": "400", "Name": "Advertising", "Type": "EXPENSE", "TaxType": "INPUT"},
            "090": {"Code": "090", "Name": "Business Bank Account", "Type": "BANK", "TaxType": "NONE"},
        }
        self.tax_rates: dict[str, Decimal] = {
            "OUTPUT": Decimal("15"), "OUTPUT2": Decimal("20"), "NONE": Decimal("0"),
            "EXEMPTOUTPUT": Decimal("0"), "INPUT": Decimal("15"),
        }
        self.replayed: list[str] = []  # idempotency keys answered from a saved answer
        self.answers: list[tuple[str, int, Any]] = []  # (operationId, status, body): for schema checks
        self.clock: Callable[[], float] = time.time
        self._saved: dict[tuple[str, str], _Saved] = {}
        self._failures: dict[str, deque[XeroError]] = defaultdict(deque)
        self._calls: dict[str, deque[float]] = defaultdict(deque)
        self._counters = {"INV": 0, "QU": 0}
        self._handlers: dict[str, Callable[[Request, Any, dict[str, Any]], Any]] = {
            "getContacts": self._list_contacts,
            "createContacts": self._create_contacts,
            "getItems": self._list_items,
            "createItems": self._create_items,
            "createInvoices": self._create_invoices,
            "createQuotes": self._create_quotes,
            "getOrganisations": self._get_organisation,
        }
        for op in self.contract.operations:
            self.route(op.method, re.escape(BASE_PATH + op.path), self._endpoint(op))

    # --- knobs and seeds -------------------------------------------------------------------------
    def accept_token(self, token: str, expires_at: float | None = None) -> None:
        self.tokens[token] = expires_at

    def use_oauth(self, oauth: Any) -> None:
        """Take the access tokens a fake token endpoint (tests/fakes/oauth_server.OAuthFake) issues: valid
        while it says so; one that worked before and no longer does (expired, revoked) answers 401
        TokenExpired, an answer and not a violation; a token never seen working is a violation."""
        seen: set[str] = set()

        def check(token: str) -> str:
            if oauth.access_token_valid(token):
                seen.add(token)
                return "valid"
            return "expired" if token in seen else "unknown"

        self.token_checker = check

    def expire_token(self, token: str) -> None:
        """The token stops working now (as if its 30 minutes were up)."""
        self.tokens[token] = self.clock() - 1

    def fail_next(
        self, operation_id: str, status: int = 429, *, times: int = 1, retry_after: float | None = None,
        message: str | None = None, rate_problem: str = "minute",
    ) -> None:
        """The next `times` calls of the operation (e.g. "createInvoices") answer `status` instead."""
        self.contract.by_id(operation_id)  # a typo fails the test, not silently nothing
        for _ in range(times):
            if status == 429:
                headers = {"X-Rate-Limit-Problem": rate_problem}
                if retry_after is not None:
                    headers["Retry-After"] = f"{retry_after:g}"
                error = problem(429, "Too Many Requests", message or "Rate limit exceeded", headers)
            elif status >= 500:
                error = problem(status, "An error occurred", message or "An error occurred in Xero. "
                                "Check the API Status page http://status.developer.xero.com for current "
                                "service status.")
            elif status == 400:
                error = validation_error([{"ValidationErrors": [{"Message": message or "Refused by a test knob."}]}])
            else:
                error = problem(status, "Refused", message or "Refused by a test knob.")
            self._failures[operation_id].append(error)

    def add_contact(self, name: str, *, email: str | None = None, first_name: str | None = None,
                    last_name: str | None = None, status: str = "ACTIVE", **fields: Any) -> dict[str, Any]:
        contact = self._new_contact({"Name": name, "EmailAddress": email, "FirstName": first_name,
                                     "LastName": last_name, **fields})
        contact["ContactStatus"] = status
        return copy.deepcopy(contact)

    def add_item(self, code: str, name: str | None = None, *, unit_price: float | None = None,
                 account_code: str | None = "200", tax_type: str | None = None,
                 description: str | None = None) -> dict[str, Any]:
        sales: dict[str, Any] = {}
        if unit_price is not None:
            sales["UnitPrice"] = unit_price
        if account_code is not None:
            sales["AccountCode"] = account_code
        if tax_type is not None:
            sales["TaxType"] = tax_type
        item = self._new_item({"Code": code, "Name": name or code, "Description": description,
                               "IsSold": True, "SalesDetails": sales})
        return copy.deepcopy(item)

    def calls(self, method: str, path_regex: str) -> list[Request]:
        """Requests to BASE_PATH + path_regex (e.g. "/Invoices")."""
        return super().calls(method, re.escape(BASE_PATH) + path_regex)

    # --- the request pipeline --------------------------------------------------------------------
    def not_found(self, req: Request) -> Response:
        self.violate(f"{req.method} {req.path}: no such operation")
        return problem(404, "Not Found", "The resource you're looking for cannot be found").response()

    def _endpoint(self, op: Operation) -> Callable[..., Response]:
        def serve(req: Request, *groups: str) -> Response:
            try:
                answer = self._serve(op, req)
            except XeroError as err:
                answer = err.response()
            answer.headers.setdefault("Xero-Correlation-Id", str(uuid.uuid4()))
            self.answers.append((op.operation_id, answer.status, copy.deepcopy(answer.body)))
            return answer

        return serve

    def _serve(self, op: Operation, req: Request) -> Response:
        where = f"{req.method} {req.path}"
        for hook in self.before_request:
            hook(req)
        self._authenticate(req, where)
        tenant = req.headers.get("xero-tenant-id", "")
        if tenant and tenant != self.tenant_id:
            self.violate(f"{where}: xero-tenant-id {tenant} is not an organisation this token may use")
            raise problem(403, "Forbidden", "AuthenticationUnsuccessful")
        if self._failures[op.operation_id]:
            raise self._failures[op.operation_id].popleft()  # like the gateway in front: nothing saved
        self._count_call(tenant or "-", where)

        checked = self.contract.check_request(req.method, req.path.removeprefix(BASE_PATH), req.query,
                                              req.headers, req.body)
        if checked.problems:
            self.violate(f"{where}: " + "; ".join(str(p) for p in checked.problems))
            raise post_data_invalid("; ".join(str(p) for p in checked.problems))

        key = req.headers.get("idempotency-key") if req.method in ("PUT", "POST") else None
        fingerprint = json.dumps([req.method, req.path, sorted(checked.query.items()), checked.body],
                                 sort_keys=True, default=str)
        if key is not None:
            if len(key) > MAX_IDEMPOTENCY_KEY:
                self.violate(f"{where}: Idempotency-Key is {len(key)} characters, Xero takes {MAX_IDEMPOTENCY_KEY}")
                raise validation_error([{"ValidationErrors": [
                    {"Message": f"Idempotency-Key must be at most {MAX_IDEMPOTENCY_KEY} characters"}]}])
            saved = self._saved.get((tenant, key))
            if saved is not None:
                if saved.fingerprint != fingerprint:
                    self.violate(f"{where}: Idempotency-Key {key!r} was used for another request")
                    raise validation_error([{"ValidationErrors": [
                        {"Message": "The Idempotency-Key was already used for a different request"}]}])
                self.replayed.append(key)
                return copy.deepcopy(saved.response)
        try:
            body = self._handlers[op.operation_id](req, checked.body, checked.query)
            answer = Response(200, self._envelope(body))
        except XeroError as err:
            if err.status >= 400:
                self.violate(f"{where}: {_messages(err.body)}")
            answer = err.response()
        if key is not None:
            self._saved[(tenant, key)] = _Saved(fingerprint, copy.deepcopy(answer))
        return answer

    def _authenticate(self, req: Request, where: str) -> None:
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        state = "unknown"
        if scheme.lower() == "bearer" and token:
            if self.token_checker is not None:
                state = self.token_checker(token)
            elif token in self.tokens:
                expires = self.tokens[token]
                state = "expired" if expires is not None and expires <= self.clock() else "valid"
        if state == "valid":
            return
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        if state == "expired":  # an answer a client must handle (by refreshing), not a mistake
            raise problem(401, "Unauthorized", "TokenExpired: token expired", headers)
        self.violate(f"{where}: no valid bearer token")
        raise problem(401, "Unauthorized", "AuthenticationUnsuccessful", headers)

    def _count_call(self, tenant: str, where: str) -> None:
        """Xero's 60 calls in any 60 seconds per organisation (a rolling window)."""
        if self.minute_limit is None:
            return
        now = self.clock()
        calls = self._calls[tenant]
        while calls and calls[0] <= now - 60:
            calls.popleft()
        if len(calls) >= self.minute_limit:
            wait = max(1, int(calls[0] + 60 - now + 0.999))
            self.violate(f"{where}: more than {self.minute_limit} calls in a minute for tenant {tenant}")
            raise problem(429, "Too Many Requests", "Rate limit exceeded",
                          {"Retry-After": str(wait), "X-Rate-Limit-Problem": "minute"})
        calls.append(now)

    def _envelope(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"Id": str(uuid.uuid4()), "Status": "OK", "ProviderName": PROVIDER,
                "DateTimeUTC": ms_datetime(self.clock()), **body}

    def _today(self) -> date:
        return datetime.fromtimestamp(self.clock(), UTC).date()

    # --- contacts --------------------------------------------------------------------------------
    def _new_contact(self, given: dict[str, Any]) -> dict[str, Any]:
        contact: dict[str, Any] = {
            "ContactID": str(uuid.uuid4()), "ContactStatus": "ACTIVE",
            **{k: v for k, v in given.items() if v is not None},
            "Addresses": given.get("Addresses") or [{"AddressType": "STREET"}, {"AddressType": "POBOX"}],
            "Phones": given.get("Phones") or [],
            "UpdatedDateUTC": ms_datetime(self.clock()), "ContactGroups": [], "ContactPersons": [],
            "IsSupplier": bool(given.get("IsSupplier")), "IsCustomer": bool(given.get("IsCustomer")),
            "HasAttachments": False, "HasValidationErrors": False,
        }
        self.contacts[contact["ContactID"]] = contact
        return contact

    def _list_contacts(self, req: Request, body: Any, query: dict[str, Any]) -> dict[str, Any]:
        found = list(self.contacts.values())
        if not query.get("includeArchived"):
            found = [c for c in found if c["ContactStatus"] != "ARCHIVED"]
        if "IDs" in query:
            wanted = {i.lower() for i in query["IDs"]}
            found = [c for c in found if c["ContactID"].lower() in wanted]
        if "where" in query:
            clauses = parse_where(query["where"], CONTACT_FIELDS)
            found = [c for c in found if matches(c, clauses)]
        if query.get("searchTerm"):
            term = str(query["searchTerm"]).casefold()
            found = [c for c in found if any(term in str(c.get(f) or "").casefold() for f in SEARCH_FIELDS)]
        return self._page("Contacts", found, query)

    def _page(self, name: str, found: list[dict[str, Any]], query: dict[str, Any]) -> dict[str, Any]:
        if "page" not in query:
            return {name: copy.deepcopy(found)}
        size = min(int(query.get("pageSize") or PAGE_SIZE), 1000)
        page = max(1, int(query["page"]))
        chunk = found[(page - 1) * size: page * size]
        return {"pagination": {"page": page, "pageSize": size, "pageCount": -(-len(found) // size),
                               "itemCount": len(found)}, name: copy.deepcopy(chunk)}

    def _create_contacts(self, req: Request, body: Any, query: dict[str, Any]) -> dict[str, Any]:
        given = body.get("Contacts") or []
        if not given:
            raise validation_error([{"ValidationErrors": [{"Message": "No Contacts were provided"}]}])
        names_in_batch: set[str] = set()
        elements = []
        for contact in given:
            errors = []
            name = (contact.get("Name") or "").strip()
            if not name:
                errors.append("The contact name must be specified.")
            elif name.casefold() in names_in_batch or any(
                c["Name"].casefold() == name.casefold() and c["ContactStatus"] == "ACTIVE"
                for c in self.contacts.values()
            ):
                errors.append(f"The contact name {name} is already assigned to another contact. The contact "
                              "name must be unique across all active contacts.")
            names_in_batch.add(name.casefold())
            email = contact.get("EmailAddress")
            if email and not _EMAIL.match(email):
                errors.append("Email address must be valid.")
            if contact.get("ContactID"):
                errors.append("A ContactID cannot be given when creating a contact; use POST to update.")
            elements.append({**contact, "ValidationErrors": [{"Message": m} for m in errors]})
        if any(e["ValidationErrors"] for e in elements):
            raise validation_error(elements)
        created = [self._new_contact({**c, "Name": c["Name"].strip()}) for c in given]
        return {"Contacts": copy.deepcopy(created)}

    # --- items -----------------------------------------------------------------------------------
    def _new_item(self, given: dict[str, Any]) -> dict[str, Any]:
        item: dict[str, Any] = {
            "ItemID": str(uuid.uuid4()), "IsSold": True, "IsPurchased": False,
            **{k: v for k, v in given.items() if v is not None},
            "PurchaseDetails": given.get("PurchaseDetails") or {},
            "SalesDetails": given.get("SalesDetails") or {},
            "IsTrackedAsInventory": False, "UpdatedDateUTC": ms_datetime(self.clock()),
        }
        self.items[item["ItemID"]] = item
        return item

    def _item_by_code(self, code: str) -> dict[str, Any] | None:
        return next((i for i in self.items.values() if i["Code"].casefold() == code.casefold()), None)

    def _get_organisation(self, req: Request, body: Any, query: dict[str, Any]) -> dict[str, Any]:
        org = self.organisation
        found: dict[str, Any] = {
            "OrganisationID": org.tenant_id, "Name": org.name, "LegalName": org.name, "Version": "GLOBAL",
            "OrganisationType": "COMPANY", "BaseCurrency": org.base_currency, "CountryCode": org.country_code,
            "IsDemoCompany": False, "OrganisationStatus": "ACTIVE", "PaysTax": True,
            "SalesTaxBasis": org.sales_tax_basis, "Timezone": "UTC", "Edition": "BUSINESS",
            "Class": "PREMIUM", "ShortCode": "!BfTst"}
        if org.tax_number:
            found["TaxNumber"] = org.tax_number
        return {"Organisations": [found]}

    def _list_items(self, req: Request, body: Any, query: dict[str, Any]) -> dict[str, Any]:
        found = list(self.items.values())
        if "where" in query:
            clauses = parse_where(query["where"], ITEM_FIELDS)
            found = [i for i in found if matches(i, clauses)]
        return {"Items": copy.deepcopy(found)}

    def _create_items(self, req: Request, body: Any, query: dict[str, Any]) -> dict[str, Any]:
        given = body.get("Items") or []
        if not given:
            raise validation_error([{"ValidationErrors": [{"Message": "No Items were provided"}]}])
        codes: set[str] = set()
        elements = []
        for item in given:
            errors = []
            code = item.get("Code", "")
            if not code.strip():
                errors.append("Item code must be specified.")
            elif code.casefold() in codes or self._item_by_code(code):
                errors.append(f"Item code '{code}' already exists.")
            codes.add(code.casefold())
            for side in ("SalesDetails", "PurchaseDetails"):
                details = item.get(side) or {}
                account = details.get("AccountCode")
                if account is not None and account not in self.accounts:
                    errors.append(f"Account code '{account}' is not a valid code.")
                tax = details.get("TaxType")
                if tax is not None and tax not in self.tax_rates:
                    errors.append(f"The TaxType code '{tax}' does not exist or cannot be used.")
            elements.append({**item, "ValidationErrors": [{"Message": m} for m in errors]})
        if any(e["ValidationErrors"] for e in elements):
            raise validation_error(elements)
        return {"Items": copy.deepcopy([self._new_item(i) for i in given])}

    # --- invoices and quotes ---------------------------------------------------------------------
    def _create_invoices(self, req: Request, body: Any, query: dict[str, Any]) -> dict[str, Any]:
        given = body.get("Invoices") or []
        if not given:
            raise validation_error([{"ValidationErrors": [{"Message": "No Invoices were provided"}]}])
        unit_places = 4 if query.get("unitdp") == 4 else 2
        built = [self._build_document("invoice", doc, unit_places, req) for doc in given]
        if any(errors for _, errors in built):
            raise validation_error([{**doc, "ValidationErrors": [{"Message": m} for m in errors]}
                                    for doc, errors in built])
        created = []
        for invoice, _ in built:
            self._counters["INV"] += 1
            invoice.setdefault("InvoiceNumber", f"INV-{self._counters['INV']:04d}")
            self.invoices[invoice["InvoiceID"]] = invoice
            if invoice["Status"] == "AUTHORISED":
                self.contacts[invoice["Contact"]["ContactID"]]["IsCustomer"] = True
            created.append(copy.deepcopy(invoice))
        return {"Invoices": created}

    def _create_quotes(self, req: Request, body: Any, query: dict[str, Any]) -> dict[str, Any]:
        given = body.get("Quotes") or []
        if not given:
            raise validation_error([{"ValidationErrors": [{"Message": "No Quotes were provided"}]}])
        built = [self._build_document("quote", doc, 2, req) for doc in given]
        if any(errors for _, errors in built):
            raise validation_error([{**doc, "ValidationErrors": [{"Message": m} for m in errors]}
                                    for doc, errors in built])
        created = []
        for quote, _ in built:
            self._counters["QU"] += 1
            quote.setdefault("QuoteNumber", f"QU-{self._counters['QU']:04d}")
            self.quotes[quote["QuoteID"]] = quote
            created.append(copy.deepcopy(quote))
        return {"Quotes": created}

    def _build_document(
        self, kind: str, doc: dict[str, Any], unit_places: int, req: Request
    ) -> tuple[dict[str, Any], list[str]]:
        """The stored document (invoice or quote) and Xero's validation messages for it."""
        errors: list[str] = []
        is_invoice = kind == "invoice"
        if is_invoice:
            doc_type = doc.get("Type")
            if doc_type is None:
                errors.append("Invoice Type must be specified.")
            elif doc_type not in ("ACCREC", "ACCPAY"):
                errors.append(f"Invoice Type {doc_type} cannot be created on /Invoices.")
            status = doc.get("Status", "DRAFT")
            if status not in CREATABLE_INVOICE_STATUSES:
                errors.append("Invoice not of valid status for creation")
        else:
            status = doc.get("Status", "DRAFT")
            if status not in CREATABLE_QUOTE_STATUSES:
                errors.append(f"Quote status {status} is not valid for creation")
        final = status in ("SUBMITTED", "AUTHORISED", "SENT")

        contact = self._document_contact(doc.get("Contact"), errors)
        day = parse_date(doc["Date"]) if "Date" in doc else self._today()
        if day is None:
            errors.append(f"Date '{doc['Date']}' is not a valid date.")
        due_name = "DueDate" if is_invoice else "ExpiryDate"
        due = parse_date(doc[due_name]) if due_name in doc else None
        if due_name in doc and due is None:
            errors.append(f"{due_name} '{doc[due_name]}' is not a valid date.")
        if is_invoice and final and due_name not in doc:
            errors.append("Due Date is required.")
        if not is_invoice and "Date" not in doc:
            errors.append("Date is required.")

        currency = doc.get("CurrencyCode", self.organisation.base_currency)
        if currency not in self.currencies:
            errors.append(f"The currency code '{currency}' has not been added to this organisation.")
        number_field = "InvoiceNumber" if is_invoice else "QuoteNumber"
        store = self.invoices if is_invoice else self.quotes
        if doc.get(number_field) and any(d.get(number_field) == doc[number_field] for d in store.values()):
            errors.append("Invoice # must be unique." if is_invoice else "Quote number must be unique.")

        amount_types = doc.get("LineAmountTypes", "Exclusive" if is_invoice else "EXCLUSIVE")
        mode = str(amount_types).upper()
        lines = doc.get("LineItems") or []
        if final and not lines:
            errors.append("At least one line item must be specified.")
        built_lines = [self._build_line(line, final, unit_places, mode, errors, req) for line in lines]
        sub_total = sum((ln["LineAmount"] for ln in built_lines), Decimal(0))
        total_tax = sum((ln["TaxAmount"] for ln in built_lines), Decimal(0))
        if mode == "INCLUSIVE":
            sub_total -= total_tax
        total = sub_total + total_tax

        stored: dict[str, Any] = {
            **{k: v for k, v in doc.items() if k not in ("LineItems", "Contact", "Date", due_name)},
            "Contact": copy.deepcopy(contact) if contact else doc.get("Contact"),
            "Date": ms_date(day) if day else doc.get("Date"),
            "DateString": f"{day.isoformat()}T00:00:00" if day else None,
            "Status": status,
            "LineAmountTypes": amount_types,
            "LineItems": [{k: _number(v) for k, v in ln.items()} for ln in built_lines],
            "SubTotal": float(sub_total), "TotalTax": float(total_tax), "Total": float(total),
            "CurrencyCode": currency, "CurrencyRate": 1.0,
            "UpdatedDateUTC": ms_datetime(self.clock()),
        }
        if due is not None:
            stored[due_name] = ms_date(due)
            stored[f"{due_name}String"] = f"{due.isoformat()}T00:00:00"
        if is_invoice:
            stored.update({
                "InvoiceID": str(uuid.uuid4()), "AmountDue": float(total), "AmountPaid": 0.0,
                "AmountCredited": 0.0, "Payments": [], "CreditNotes": [], "Prepayments": [],
                "Overpayments": [], "IsDiscounted": False, "HasAttachments": False, "HasErrors": False,
                "SentToContact": False,
            })
        else:
            stored.update({"QuoteID": str(uuid.uuid4()), "TotalDiscount": 0.0})
        return stored, errors

    def _document_contact(self, given: Any, errors: list[str]) -> dict[str, Any] | None:
        if not isinstance(given, dict) or not (given.get("ContactID") or given.get("Name")):
            errors.append("A Contact must be specified for this type of transaction")
            return None
        if given.get("ContactID"):
            contact = self.contacts.get(given["ContactID"])
            if contact is None:
                errors.append(f"Contact with ContactID {given['ContactID']} could not be found.")
                return None
        else:  # Xero matches a Name-only contact, or creates it
            name = given["Name"].strip()
            contact = next((c for c in self.contacts.values()
                            if c["Name"].casefold() == name.casefold() and c["ContactStatus"] == "ACTIVE"),
                           None) or self._new_contact({"Name": name})
        if contact["ContactStatus"] == "ARCHIVED":
            errors.append(f"The contact {contact['Name']} is archived and cannot be used.")
        return {"ContactID": contact["ContactID"], "Name": contact["Name"], "ContactStatus":
                contact["ContactStatus"], "Addresses": [], "Phones": [], "ContactGroups": [],
                "ContactPersons": [], "HasValidationErrors": False}

    def _build_line(
        self, line: dict[str, Any], final: bool, unit_places: int, mode: str, errors: list[str],
        req: Request,
    ) -> dict[str, Any]:
        item = None
        if line.get("ItemCode"):
            item = self._item_by_code(line["ItemCode"])
            if item is None:
                errors.append(f"Item code '{line['ItemCode']}' is not valid")
        sales = (item or {}).get("SalesDetails", {})
        description = line.get("Description") or (item or {}).get("Description") or (item or {}).get("Name")
        account = line.get("AccountCode") or sales.get("AccountCode")
        if final and not description:
            errors.append("Description must be specified for each line item.")
        if account is not None and (account not in self.accounts or self.accounts[account]["Type"] == "BANK"):
            errors.append(f"Account code '{account}' is not a valid code for this document.")
        if final and account is None:
            errors.append("An account code must be specified for each line item.")
        tax_type = line.get("TaxType") or sales.get("TaxType") or (
            self.accounts[account]["TaxType"] if account in self.accounts else "NONE")
        if tax_type not in self.tax_rates:
            errors.append(f"The TaxType code '{tax_type}' does not exist or cannot be used for this type "
                          "of transaction.")
        quantity = _decimal(line.get("Quantity", 1))
        unit = _decimal(line.get("UnitAmount", sales.get("UnitPrice", 0)))
        places = Decimal(1).scaleb(-unit_places)
        if unit != unit.quantize(places, rounding=ROUND_HALF_UP):
            where = f"{req.method} {req.path}"
            self.violate(f"{where}: UnitAmount {unit} has more than {unit_places} decimals; Xero would "
                         "round it (send unitdp=4 for up to 4)")
            unit = unit.quantize(places, rounding=ROUND_HALF_UP)
        line_amount = (quantity * unit).quantize(TWO, rounding=ROUND_HALF_UP)
        if line.get("DiscountRate") is not None and line.get("DiscountAmount") is not None:
            errors.append("A line item can have a DiscountRate or a DiscountAmount, not both.")
        if line.get("DiscountRate") is not None:
            line_amount = (line_amount * (1 - _decimal(line["DiscountRate"]) / 100)).quantize(TWO, ROUND_HALF_UP)
        elif line.get("DiscountAmount") is not None:  # ACCREC invoices and quotes only, as Xero documents
            line_amount = (line_amount - _decimal(line["DiscountAmount"])).quantize(TWO, ROUND_HALF_UP)
        rate = self.tax_rates.get(tax_type, Decimal(0)) / 100
        if mode in ("NOTAX",):
            tax = Decimal(0)
        elif mode == "INCLUSIVE":
            tax = (line_amount - line_amount / (1 + rate)).quantize(TWO, rounding=ROUND_HALF_UP)
        else:
            tax = (line_amount * rate).quantize(TWO, rounding=ROUND_HALF_UP)
        built: dict[str, Any] = {
            "DiscountRate": line.get("DiscountRate"), "DiscountAmount": line.get("DiscountAmount"),
            "LineItemID": str(uuid.uuid4()), "Description": description, "Quantity": quantity,
            "UnitAmount": unit, "AccountCode": account, "TaxType": tax_type, "TaxAmount": tax,
            "LineAmount": line_amount, "Tracking": [],
        }
        if item is not None:
            built["ItemCode"] = item["Code"]
            built["Item"] = {"ItemID": item["ItemID"], "Code": item["Code"], "Name": item.get("Name")}
        return {k: v for k, v in built.items() if v is not None}


def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return Decimal(0)


def _number(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


def _messages(body: Any) -> str:
    if isinstance(body, dict):
        found = [v.get("Message") for e in body.get("Elements") or [] for v in e.get("ValidationErrors") or []]
        if found:
            return "; ".join(str(m) for m in found)
        return str(body.get("Message") or body.get("Detail") or body)
    return str(body)
