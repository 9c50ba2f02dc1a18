"""Zoho Books: invoices and estimates through the Books API v3 (JSON bodies, organization_id on every call).

One send resolves everything before it creates anything: the customer (by the contact id stored on the
CRM, then email, then first and last name, then display name: connectors/matching.py; active customers
only), an item for every line (by SKU, then by name), and, when a customer has to be created in a currency
other than the organization's, that currency's id. Then it creates what is missing (the customer unless
customer_matching is strict, the items when create_products is on, otherwise ProductNotFound lists every
unmatched line and nothing was created), and finally the invoice or estimate.

Zoho has no Idempotency-Key. A retried send must still never make a second document, so the document's
reference_number carries a marker derived from the run's idempotency key ("bf-" and 10 hex digits, after
the draft's own reference when it has one), and before creating, billflow lists the customer's documents
with that reference_number: when one exists (an earlier attempt created it and its answer was lost), it is
the answer. Contacts and items need no marker: each is looked up before it is created, so a retry finds
what the first attempt made.

A Zoho invoice is in its customer's currency: a matched customer in another currency than the draft's is
refused before anything is created; a new customer is created in the draft's currency.

Each call takes a unit of the organization's budget first (storage/rate_limits.py: 100 requests a minute
per organization, counted per billflow tenant and organization); an exhausted budget raises TransientError
with the seconds to wait, as does Zoho's 429 or a 5xx. Other errors ({"code": n, "message": ...}) become
TargetRejected with Zoho's message.

OAuth (connectors/oauth.py): Zoho authenticates clients with client_id and client_secret in the token
request, sends access tokens as "Authorization: Zoho-oauthtoken ..." and does not rotate refresh tokens
(its token answer has no refresh_token; the stored one is kept). The token answer's api_domain (the
organization's data centre, e.g. https://www.zohoapis.eu) is where the API calls go when the connection
names none.

Connection settings: organization_id (required), client_id, client_secret, refresh_token, api_domain or
base_url (default https://www.zohoapis.com), accounts-server (as Zoho returns it with the grant, e.g.
https://accounts.zoho.eu), token_url (default: the accounts server of the api_domain's data centre, see
DATA_CENTRES; https://accounts.zoho.com/oauth/v2/token for the US), customer_matching ("create_if_missing" or
"strict"), create_products (default false), item_product_type (goods, service or digital_service, default
service), sales_account_id (the income account of new items).

Draft options: date (YYYY-MM-DD, default today in UTC), tax_id (the Zoho tax of taxable lines), send (true:
Zoho emails the document to the customer's contact persons; default false, it stays a draft). The memo
becomes the document's notes; days_until_due its payment terms (invoices) or validity (estimates).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from billflow.connectors import http, matching
from billflow.connectors.base import ConnectionReport, Connector, SendContext
from billflow.connectors.matching import same_text
from billflow.connectors.oauth import OAuthSession, TokenStore
from billflow.errors import ConfigurationError, TargetRejected, TransientError
from billflow.models.documents import CustomerInfo, DispatchResult, InvoiceDraft, LineItem
from billflow.money import exchange_rate, minor_to_decimal
from billflow.rules.target_limits import option_problems
from billflow.storage.rate_limits import ZOHO_BOOKS, RateLimiter, get_rate_limiter
from billflow.storage.secrets import Connection

TARGET = "zoho_books"
DEFAULT_BASE_URL = "https://www.zohoapis.com"
DEFAULT_TOKEN_URL = "https://accounts.zoho.com/oauth/v2/token"  # noqa: S105 - a URL, not a secret
API_PATH = "/books/v3"
TOKEN_PATH = "/oauth/v2/token"  # noqa: S105 - a path, not a secret
# Zoho's data centres: the API domain a token answers (api_domain) and the accounts server its tokens come
# from. Zoho: the accounts server URL "is specific to the location (i.e., datacenter)"; the pairs are Zoho's
# own table (Multi-DC support: "Accounts Domain" and "API Domain" per region).
DATA_CENTRES: dict[str, tuple[str, str]] = {  # API host -> (data centre, accounts server)
    "www.zohoapis.com": ("US", "https://accounts.zoho.com"),
    "www.zohoapis.eu": ("EU", "https://accounts.zoho.eu"),
    "www.zohoapis.in": ("IN", "https://accounts.zoho.in"),
    "www.zohoapis.com.au": ("AU", "https://accounts.zoho.com.au"),
    "www.zohoapis.jp": ("JP", "https://accounts.zoho.jp"),
    "www.zohoapis.ca": ("CA", "https://accounts.zohocloud.ca"),
    "www.zohoapis.com.cn": ("CN", "https://accounts.zoho.com.cn"),
    "www.zohoapis.sa": ("SA", "https://accounts.zoho.sa"),
}
ACCOUNTS_SERVERS = frozenset(server for _, server in DATA_CENTRES.values())
MAX_REFERENCE = 100
MAX_CONTACT_NAME = 200  # createContact: contact_name "Max-length [200]"
MAX_CONTACT_SEARCH = 100  # listContacts: contact_name "Max-length [100]" (and its _startswith variant)
MAX_PAYMENT_TERMS = 100  # createInvoice: payment_terms "Maximum value is 100 days."
ITEMS_PER_PAGE = 200  # the items list's largest page
MAX_ITEM_PAGES = 50  # 10,000 active items: beyond that a SKU lookup would cost too many calls
MAX_ITEM_NAME = 100
MAX_DESCRIPTION = 2000
MAX_NOTES = 5000
MARKER_DIGITS = 10
PRODUCT_TYPES = ("goods", "service", "digital_service")
ACTIVE = "Status.Active"
NOT_FOUND_CODES = frozenset({1002})  # "Contact does not exist."
# Placeholders in previews for ids only known once Zoho has answered.
CUSTOMER_ID = "{contact.contact_id}"

_DOCUMENTS = {  # draft document_type -> (API path, answer key, list key, id field, number field)
    "invoice": ("/invoices", "invoice", "invoices", "invoice_id", "invoice_number"),
    "estimate": ("/estimates", "estimate", "estimates", "estimate_id", "estimate_number"),
}


# --- small helpers -----------------------------------------------------------------------------------
def idempotency_marker(idempotency_key: str, document_type: str) -> str:
    digest = hashlib.sha256(f"{idempotency_key}\x1f{document_type}".encode()).hexdigest()
    return f"bf-{digest[:MARKER_DIGITS]}"


def marked_reference(reference: str | None, marker: str) -> str:
    """The reference_number: the draft's reference (shortened to fit) and the run's marker."""
    if not reference or not reference.strip():
        return marker
    room = MAX_REFERENCE - len(marker) - 1
    return f"{reference.strip()[:room].rstrip()} {marker}"


def unique_products(products: list[matching.ProductToCreate]) -> list[matching.ProductToCreate]:
    """One new item per SKU, else per name as sent (cut to MAX_ITEM_NAME): Zoho refuses a second item with
    either. products_to_create already merges by SKU and by whole name; this also merges names that are
    the same once cut, and a SKU-less product whose name is another product's SKU."""
    by_key: dict[str, matching.ProductToCreate] = {}
    for product in products:
        key = (product.sku or product.name[:MAX_ITEM_NAME]).casefold()
        if key in by_key:
            by_key[key].line_indexes.extend(product.line_indexes)
        else:
            by_key[key] = product
    return list(by_key.values())


def document_date(draft: InvoiceDraft, today: date | None = None) -> date:
    raw = draft.options.get("date")
    if raw is None:
        return today or datetime.now(UTC).date()
    try:
        return date.fromisoformat(str(raw))
    except ValueError:
        raise ConfigurationError(f"zoho_books option date must be YYYY-MM-DD, not {raw!r}") from None


def _flag_option(draft: InvoiceDraft, name: str) -> bool:
    value = draft.options.get(name, False)
    if not isinstance(value, bool):
        raise ConfigurationError(f"zoho_books option {name} must be true or false")
    return value


def _text_option(draft: InvoiceDraft, name: str) -> str | None:
    value = draft.options.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str | int):
        raise ConfigurationError(f"zoho_books option {name} must be text")
    return str(value)


def product_type(connection: Connection) -> str:
    value = connection.settings.get("item_product_type") or "service"
    if value not in PRODUCT_TYPES:
        raise ConfigurationError(
            f"connection {connection.name!r}: item_product_type must be one of {', '.join(PRODUCT_TYPES)}"
        )
    return str(value)


# --- the request bodies ----------------------------------------------------------------------------
def contact_body(customer: CustomerInfo, currency_id: str | None) -> dict[str, Any]:
    name = customer.name.strip()[:MAX_CONTACT_NAME]
    person_name = " ".join(p for p in ((customer.first_name or "").strip(), (customer.last_name or "").strip()) if p)
    individual = bool(person_name) and person_name.casefold() == name.casefold()
    body: dict[str, Any] = {
        "contact_name": name,
        "contact_type": "customer",
        "customer_sub_type": "individual" if individual else "business",
    }
    if not individual:
        body["company_name"] = name
    if currency_id:
        body["currency_id"] = currency_id
    person = {k: v.strip() for k, v in (("first_name", customer.first_name), ("last_name", customer.last_name),
                                        ("email", customer.email)) if v and v.strip()}
    if person:
        body["contact_persons"] = [{**person, "is_primary_contact": True}]
    address = customer.address
    fields = {"address": address.line1, "street2": address.line2, "city": address.city, "state": address.state,
              "zip": address.postal_code, "country": address.country}
    present = {k: v for k, v in fields.items() if v}
    if present:
        body["billing_address"] = present
    return body


def item_body(product: matching.ProductToCreate, currency: str, kind: str, account_id: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": product.name[:MAX_ITEM_NAME],
        "rate": float(minor_to_decimal(product.line.unit_amount_minor, currency)),
        "description": product.line.description[:MAX_DESCRIPTION],
        "product_type": kind,
        "item_type": "sales",
    }
    if product.sku:
        body["sku"] = product.sku
    if account_id:
        body["account_id"] = account_id
    return body


def line_body(draft: InvoiceDraft, line: LineItem, item_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "item_id": item_id,
        "description": line.description[:MAX_DESCRIPTION],
        "rate": float(minor_to_decimal(line.unit_amount_minor, draft.currency)),
        "quantity": line.quantity,
    }
    if line.discounted:  # the line's discount as an amount (the contract types discount as a number)
        body["discount"] = float(minor_to_decimal(line.discount_minor(), draft.currency))
    tax_id = _text_option(draft, "tax_id")
    if tax_id and line.taxable:
        body["tax_id"] = tax_id
    return body


def document_body(
    draft: InvoiceDraft, customer_id: str, item_ids: list[str], reference: str, today: date | None = None,
    exchange_rate: Decimal | None = None,
) -> dict[str, Any]:
    day = document_date(draft, today)
    days = draft.days_until_due or 0
    body: dict[str, Any] = {
        "customer_id": customer_id,
        "date": day.isoformat(),
        "reference_number": reference,
        "line_items": [line_body(draft, line, item_id) for line, item_id in zip(draft.lines, item_ids, strict=True)],
    }
    if exchange_rate is not None:
        body["exchange_rate"] = float(exchange_rate)
    if any(line.discounted for line in draft.lines):
        # Discounts per line (Zoho's discount_type item_level), taken off before tax as the CRM priced them.
        body["discount_type"] = "item_level"
        body["is_discount_before_tax"] = True
    if draft.document_type == "estimate":
        body["expiry_date"] = (day + timedelta(days=days)).isoformat()
    else:
        body["payment_terms"] = days
        body["due_date"] = (day + timedelta(days=days)).isoformat()
    if draft.memo:
        body["notes"] = draft.memo[:MAX_NOTES]
    return body


def exchange_rate_option(draft: InvoiceDraft) -> Decimal | None:
    """The rule's exchange_rate: base-currency units for one unit of the document's currency."""
    return exchange_rate(draft.options.get("exchange_rate"), option="zoho_books option exchange_rate")


def check_draft(draft: InvoiceDraft) -> None:
    """Refuse, before any call, what would fail after billflow created a customer or items."""
    if draft.document_type not in _DOCUMENTS:
        raise ConfigurationError(f"zoho_books creates invoices and estimates, not {draft.document_type}")
    problems = option_problems(f"{TARGET}.{draft.document_type}", {"days_until_due": draft.days_until_due})
    if problems:
        raise ConfigurationError("; ".join(problems))
    exchange_rate_option(draft)
    if not draft.customer.name.strip():
        raise ConfigurationError("zoho_books needs the customer's name (a contact's contact_name is required)")
    document_body(draft, CUSTOMER_ID, [""] * len(draft.lines), "")  # validates every option
    _flag_option(draft, "send")


# --- errors ------------------------------------------------------------------------------------------
def zoho_error(answer: http.HttpResponse) -> tuple[int | None, str]:
    try:
        doc = answer.json()
    except ValueError:
        return None, answer.body[:500].decode("utf-8", "replace")
    if isinstance(doc, dict) and isinstance(doc.get("message"), str):
        code = doc.get("code")
        return (code if isinstance(code, int) else None), doc["message"][:500]
    return None, http.error_message(answer)


def raise_for(answer: http.HttpResponse) -> None:
    code, message = zoho_error(answer)
    if answer.status < 400 and (code in (None, 0)):
        return
    text = f"zoho_books answered {answer.status}" + (f" (code {code})" if code else "") + f": {message}"
    if answer.status == 429 or answer.status >= 500:
        raise TransientError(text, retry_after_seconds=http.retry_after(answer.headers), status=answer.status)
    raise TargetRejected(text, status=answer.status, code=code)


# --- the API client -------------------------------------------------------------------------------
AUTH_SCHEME = "Zoho-oauthtoken"  # Zoho's word for the access token in the Authorization header


def api_root(connection: Connection, refreshed: Mapping[str, Any] | None = None) -> str:
    """Where the API calls go: base_url, else the connection's api_domain, else the api_domain the last
    token refresh answered (the organization's data centre), else the US data centre."""
    settings = connection.settings
    domain = settings.get("base_url") or settings.get("api_domain") or (refreshed or {}).get("api_domain")
    return str(domain or DEFAULT_BASE_URL).rstrip("/") + API_PATH


def data_centre(connection: Connection) -> str | None:
    """The data centre (US, EU, IN, AU, JP, CA, CN, SA) of the connection's API domain; None for a host
    that is not one of Zoho's (a proxy, a test server)."""
    domain = connection.settings.get("api_domain") or connection.settings.get("base_url") or DEFAULT_BASE_URL
    host = (urlsplit(str(domain)).hostname or "").lower()
    if host in DATA_CENTRES:
        return DATA_CENTRES[host][0]
    if host.startswith("www.zohoapis.") or host.endswith(".zohoapis.com"):
        raise ConfigurationError(
            f"connection {connection.name!r}: {host} is not a Zoho data centre billflow knows "
            f"({', '.join(sorted(DATA_CENTRES))}); set token_url to its accounts server's token endpoint")
    return None


def token_url(connection: Connection) -> str:
    """Where refresh grants go: the grant's own accounts-server (Zoho returns it with the authorization
    code), else the accounts server of the API domain's data centre, else the US one. The connection's
    token_url setting, when present, wins over both (OAuthSession reads it)."""
    server = connection.settings.get("accounts-server") or connection.settings.get("accounts_server")
    if server:
        server = str(server).rstrip("/")
        if server not in ACCOUNTS_SERVERS:
            raise ConfigurationError(f"connection {connection.name!r}: accounts-server {server!r} is not a Zoho "
                                     f"accounts server ({', '.join(sorted(ACCOUNTS_SERVERS))})")
        return server + TOKEN_PATH
    centre = data_centre(connection)
    if centre is None:
        return DEFAULT_TOKEN_URL
    return next(accounts for name, accounts in DATA_CENTRES.values() if name == centre) + TOKEN_PATH


class _ZohoApi:
    def __init__(
        self, connection: Connection, context: SendContext, limiter: RateLimiter, token_store: TokenStore | None,
    ) -> None:
        self.connection = connection
        self.organization_id = str(connection.require("organization_id"))
        self.session = OAuthSession(connection, token_url=token_url(connection), store=token_store,
                                    client_auth="body", auth_scheme=AUTH_SCHEME)
        self.limiter = limiter
        self.scope = f"{context.tenant}#{self.organization_id}"
        self.calls = 0

    @property
    def base_url(self) -> str:
        return api_root(self.connection, self.session.settings)

    def call(
        self, method: str, path: str, *, query: Mapping[str, str] | None = None, body: Any = None,
        missing_ok: bool = False,
    ) -> dict[str, Any] | None:
        # every call names the organization, but the one listing them
        params = {**({} if path == "/organizations" else {"organization_id": self.organization_id}), **(query or {})}
        headers = {"Accept": "application/json", "User-Agent": "billflow"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        with self.limiter.call(TARGET, self.scope, ZOHO_BOOKS):
            self.calls += 1
            self.session.access_token()  # a refresh first, so a new api_domain is known before the URL
            url = f"{self.base_url}{path}?{urlencode(params)}"
            answer = self.session.request(method, url, headers=headers, body=data, target=TARGET,
                                          raise_for_status=False)
        if missing_ok and answer.status in (400, 404) and zoho_error(answer)[0] in NOT_FOUND_CODES:
            return None
        raise_for(answer)
        doc = answer.json()
        if not isinstance(doc, dict):
            raise TargetRejected(f"zoho_books answered {method} {path} with something other than an object")
        return doc

    def get(self, path: str, key: str, query: Mapping[str, str]) -> list[dict[str, Any]]:
        doc = self.call("GET", path, query=query) or {}
        return [x for x in doc.get(key) or [] if isinstance(x, dict)]

    def create(
        self, path: str, key: str, body: dict[str, Any], query: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        doc = self.call("POST", path, query=query, body=body) or {}
        created = doc.get(key)
        if not isinstance(created, dict):
            raise TargetRejected(f"zoho_books answered POST {path} without the {key}")
        return created


def _is_active_customer(contact: dict[str, Any]) -> bool:
    return bool(contact.get("contact_type", "customer") == "customer" and contact.get("status", "active") == "active")


class _ItemCatalog:
    """Items by SKU and by name for one send. Zoho's items list has no SKU filter (search_text searches "by
    name or description"), so SKUs are matched exactly against the listing of active items, read once per
    send, page by page; names use the list's documented name filter. A SKU in the listing is never created
    again (Zoho: the SKU "should be unique")."""

    def __init__(self, api: _ZohoApi) -> None:
        self.api = api
        self._by_sku: dict[str, dict[str, Any]] | None = None

    @staticmethod
    def page_query(page: int) -> dict[str, str]:
        return {"filter_by": ACTIVE, "page": str(page), "per_page": str(ITEMS_PER_PAGE)}

    @staticmethod
    def name_query(name: str) -> dict[str, str]:
        return {"name": name[:MAX_ITEM_NAME], "filter_by": ACTIVE}

    def find(self, criterion: matching.ProductCriterion) -> dict[str, Any] | None:
        if criterion.field == "sku":
            return self._skus().get(criterion.value.strip().casefold())
        name = criterion.value[:MAX_ITEM_NAME]
        for item in self.api.get("/items", "items", self.name_query(name)):
            if same_text(item.get("name"), name) and item.get("item_id"):
                return item
        return None

    def _skus(self) -> dict[str, dict[str, Any]]:
        if self._by_sku is None:
            self._by_sku = {}
            for page in range(1, MAX_ITEM_PAGES + 1):
                doc = self.api.call("GET", "/items", query=self.page_query(page)) or {}
                for item in doc.get("items") or []:
                    sku = item.get("sku") if isinstance(item, dict) else None
                    if isinstance(sku, str) and sku.strip() and item.get("item_id"):
                        self._by_sku.setdefault(sku.strip().casefold(), item)
                if not (doc.get("page_context") or {}).get("has_more_page"):
                    break
            else:
                raise TargetRejected(f"zoho_books: more than {MAX_ITEM_PAGES * ITEMS_PER_PAGE} active items to "
                                     "search for SKUs; nothing was created")
        return self._by_sku


# --- the connector --------------------------------------------------------------------------------
class ZohoBooksConnector(Connector):
    kind = "zoho_books"
    document_types = frozenset(_DOCUMENTS)

    def __init__(self, *, rate_limiter: RateLimiter | None = None, token_store: TokenStore | None = None):
        self._rate_limiter = rate_limiter
        self._token_store = token_store

    def create_document(
        self, draft: InvoiceDraft, connection: Connection, context: SendContext
    ) -> DispatchResult:
        check_draft(draft)
        mode = matching.customer_matching_mode(connection)
        create_products = matching.flag_setting(connection, "create_products")
        kind = product_type(connection)
        account_id = connection.settings.get("sales_account_id") or None
        api = _ZohoApi(connection, context, self._rate_limiter or get_rate_limiter(), self._token_store)
        path, answer_key, list_key, id_field, number_field = _DOCUMENTS[draft.document_type]
        currency = draft.currency.upper()
        reference = marked_reference(draft.reference, idempotency_marker(context.idempotency_key,
                                                                         draft.document_type))

        # 1. Resolve everything: nothing is created while something could still refuse the send.
        match = matching.find_customer(draft.customer, lambda c: self._find_contact(api, c))
        matching.require_customer(match, mode=mode, target="Zoho Books")
        if match.found is not None and match.found.get("currency_code") \
                and not same_text(match.found["currency_code"], currency):
            raise TargetRejected(
                f"zoho_books: customer {match.found.get('contact_name')!r} bills in "
                f"{match.found['currency_code']}, the draft is in {currency}; Zoho Books invoices are in "
                "the customer's currency, so nothing was created"
            )
        currency_id, exchange_rate = self._currency(api, draft, currency)
        catalog = _ItemCatalog(api)
        products = matching.match_products(
            draft.lines, catalog.find, create_missing=create_products, target="Zoho Books"
        )

        # 2. Create what is missing; a customer found by the lookups may already have this document.
        contact = match.found
        existing = None
        if contact is None:
            contact = api.create("/contacts", "contact", contact_body(draft.customer, currency_id))
        else:
            existing = self._find_document(api, path, list_key, str(contact["contact_id"]), reference)
        customer_id = str(contact["contact_id"])
        item_ids: list[str] = [str(m.found["item_id"]) if m.found else "" for m in products]
        wanted = unique_products(matching.products_to_create(products)) if existing is None else []
        for product in wanted:
            item = api.create("/items", "item", item_body(product, draft.currency, kind, account_id))
            for index in product.line_indexes:
                item_ids[index] = str(item["item_id"])

        # 3. The document itself, unless an earlier attempt of this run already made it.
        document = existing
        if document is None:
            query = {"send": "true"} if _flag_option(draft, "send") else None
            body = document_body(draft, customer_id, item_ids, reference, exchange_rate=exchange_rate)
            document = api.create(path, answer_key, body, query=query)
        return DispatchResult(
            external_id=str(document.get(id_field)) if document.get(id_field) else None,
            external_url=document.get("invoice_url") or None,
            details={
                "document": draft.document_type,
                "number": document.get(number_field),
                "status": document.get("status"),
                "total": document.get("total"),
                "balance": document.get("balance"),
                "currency": document.get("currency_code"),
                "reference_number": reference,
                "customer_id": customer_id,
                "customer_created": match.found is None,
                "customer_matched_by": match.criterion.field if match.criterion else None,
                "items_created": [p.name[:MAX_ITEM_NAME] for p in wanted],
                "already_existed": existing is not None,
                "api_calls": api.calls,
            },
        )

    def test_connection(self, connection: Connection, tenant: str) -> ConnectionReport:
        """GET /organizations: the organizations the grant reaches; the connection's must be among them."""
        api = _ZohoApi(connection, SendContext(tenant, "connection-test"),
                       self._rate_limiter or get_rate_limiter(), self._token_store)
        found = api.get("/organizations", "organizations", {})
        org = next((o for o in found if str(o.get("organization_id")) == api.organization_id), None)
        if org is None:
            raise TargetRejected(f"zoho_books: the grant does not reach organization {api.organization_id} "
                                 f"(it reaches {', '.join(str(o.get('organization_id')) for o in found) or 'none'})")
        session_settings = api.session.settings
        centre = data_centre(Connection(connection.name, connection.type, session_settings))
        return ConnectionReport(
            connection=connection.name, kind=self.kind, checked="GET /organizations",
            account_name=org.get("name"), account_id=api.organization_id, currency=org.get("currency_code"),
            data_centre=centre or session_settings.get("api_domain") or api.base_url,
            tax_regime="taxes chosen per rule (option tax_id), as set up in Zoho Books",
            # Zoho scopes (ZohoBooks.invoices.CREATE...) are not readable through the API.
            can_create={"invoice": None, "estimate": None},
            notes=["creating needs the scopes ZohoBooks.invoices.CREATE, ZohoBooks.estimates.CREATE, "
                   "ZohoBooks.contacts.CREATE and ZohoBooks.settings.READ"])

    def preview_document(
        self, draft: InvoiceDraft, connection: Connection, context: SendContext
    ) -> list[dict[str, Any]]:
        """The requests create_document would make, in order; nothing is sent. Ids Zoho has not given yet
        appear as {contact.contact_id} and {item.item_id}; steps that depend on a lookup say so in "when"."""
        check_draft(draft)
        mode = matching.customer_matching_mode(connection)
        create_products = matching.flag_setting(connection, "create_products")
        kind = product_type(connection)
        account_id = connection.settings.get("sales_account_id") or None
        organization_id = str(connection.require("organization_id"))
        base_url = api_root(connection)
        path, _, _, _, _ = _DOCUMENTS[draft.document_type]
        reference = marked_reference(draft.reference, idempotency_marker(context.idempotency_key,
                                                                         draft.document_type))
        steps: list[dict[str, Any]] = []

        def add(step: str, method: str, api_path: str, query: dict[str, str] | None = None, body: Any = None,
                when: str | None = None) -> None:
            params = {"organization_id": organization_id, **(query or {})}
            steps.append({"step": step, "method": method, "path": api_path,
                          "url": f"{base_url}{api_path}?{urlencode(params)}", "query": params, "body": body,
                          **({"when": when} if when else {})})

        for criterion in matching.customer_criteria(draft.customer):
            if criterion.field == "id" and not criterion.value.isdigit():
                continue
            api_path, query = self._contact_lookup(criterion)
            add(f"find_customer_by_{criterion.field}", "GET", api_path, query,
                when=None if not steps else "no customer found yet")
        add("currencies", "GET", "/settings/currencies")
        if mode == matching.CREATE_IF_MISSING:
            add("customer", "POST", "/contacts", body=contact_body(draft.customer, "{currency.currency_id}"),
                when="no customer found")
        else:
            steps.append({"step": "fail", "when": "no customer found", "error": "CustomerNotFound"})
        if any((line.sku or "").strip() for line in draft.lines):
            add("list_items_for_skus", "GET", "/items", _ItemCatalog.page_query(1))
        for index, line in enumerate(draft.lines):
            for position, wanted in enumerate(matching.product_criteria(line)):
                if wanted.field == "name":
                    add(f"find_item_by_name:{index}", "GET", "/items", _ItemCatalog.name_query(wanted.value),
                        when="no item found by SKU" if position else None)
        add("existing", "GET", path, {"customer_id": CUSTOMER_ID, "reference_number": reference},
            when="the customer was found (an earlier attempt may have created the document)")
        if create_products:
            for product in unique_products(matching.products_to_create(
                [matching.ProductMatch(i, line, None) for i, line in enumerate(draft.lines)]
            )):
                add(f"item:{product.line_indexes[0]}", "POST", "/items",
                    body=item_body(product, draft.currency, kind, account_id), when="no item matches the line")
        else:
            steps.append({"step": "fail", "when": "a line matches no item", "error": "ProductNotFound"})
        send = {"send": "true"} if _flag_option(draft, "send") else None
        add(draft.document_type, "POST", path, send,
            body=document_body(draft, CUSTOMER_ID, ["{item.item_id}"] * len(draft.lines), reference,
                               exchange_rate=exchange_rate_option(draft)),
            when="no document with this reference_number exists yet")
        return steps

    # --- lookups -----------------------------------------------------------------------------------
    @staticmethod
    def _contact_lookup(criterion: matching.CustomerCriterion) -> tuple[str, dict[str, str]]:
        if criterion.field == "id":
            return f"/contacts/{quote(criterion.value, safe='')}", {}
        if criterion.field == "email":
            return "/contacts", {"email": criterion.value, "filter_by": ACTIVE}
        if criterion.field == "person_name":
            first, last = criterion.values
            return "/contacts", {"first_name": first, "last_name": last, "filter_by": ACTIVE}
        name = criterion.value[:MAX_CONTACT_NAME]
        if len(name) > MAX_CONTACT_SEARCH:  # the filter takes 100 characters: the rest is compared here
            return "/contacts", {"contact_name_startswith": name[:MAX_CONTACT_SEARCH], "filter_by": ACTIVE}
        return "/contacts", {"contact_name": name, "filter_by": ACTIVE}

    def _find_contact(self, api: _ZohoApi, criterion: matching.CustomerCriterion) -> dict[str, Any] | None:
        path, query = self._contact_lookup(criterion)
        if criterion.field == "id":
            if not criterion.value.isdigit():
                return None  # Zoho's ids are numbers: this one was stored by another system
            doc = api.call("GET", path, missing_ok=True)
            contact = (doc or {}).get("contact")
            return contact if isinstance(contact, dict) and _is_active_customer(contact) else None
        def matches(contact: dict[str, Any]) -> bool:
            if not _is_active_customer(contact):
                return False  # a vendor or an inactive contact cannot be invoiced
            if criterion.field == "email":
                return same_text(contact.get("email"), criterion.value)
            if criterion.field == "person_name":
                return same_text(contact.get("first_name"), criterion.values[0]) \
                    and same_text(contact.get("last_name"), criterion.values[1])
            return same_text(contact.get("contact_name"), criterion.value[:MAX_CONTACT_NAME])

        hits = [c for c in api.get(path, "contacts", query) if matches(c)]
        return matching.single_match(hits, criterion, target="Zoho Books",
                                     describe=lambda c: f"contact_id {c.get('contact_id')} {c.get('contact_name')!r}")

    @staticmethod
    def _currency(api: _ZohoApi, draft: InvoiceDraft, currency: str) -> tuple[str | None, Decimal | None]:
        """For the draft's currency: the id a new customer gets (None for the organization's base currency)
        and the exchange_rate the document carries (None in the base currency). Zoho's invoice schema says of
        exchange_rate: "Required when the invoice currency differs from the organization's base currency."
        The rate is the rule's exchange_rate option; without it a foreign-currency document is refused here,
        before anything is created."""
        currencies = api.get("/settings/currencies", "currencies", {})
        base = next((str(c.get("currency_code")) for c in currencies if c.get("is_base_currency")), None)
        entry = next((c for c in currencies if same_text(c.get("currency_code"), currency)), None)
        if entry is None:
            raise TargetRejected(f"zoho_books: the organization has no currency {currency}; add it in Zoho Books "
                                 "(Settings, Currencies), nothing was created")
        if entry.get("is_base_currency"):
            return None, None
        rate = exchange_rate_option(draft)
        if rate is None:
            raise TargetRejected(
                f"zoho_books: a {draft.document_type} in {currency} needs an exchange rate to the organization's "
                f"base currency {base} (Zoho: \"Required when the invoice currency differs from the "
                "organization's base currency.\"); set the rule's exchange_rate option (base-currency units for "
                f"one {currency}); nothing was created", currency=currency, base_currency=base)
        return str(entry["currency_id"]), rate

    @staticmethod
    def _find_document(
        api: _ZohoApi, path: str, list_key: str, customer_id: str, reference: str
    ) -> dict[str, Any] | None:
        for document in api.get(path, list_key, {"customer_id": customer_id, "reference_number": reference}):
            if document.get("reference_number") == reference and str(document.get("customer_id")) == customer_id:
                return document
        return None
