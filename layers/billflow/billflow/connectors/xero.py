"""Xero: sales invoices (ACCREC) and, for estimates, quotes, through the accounting API (api.xro/2.0).

One send resolves everything before it creates anything: the contact (by the ContactID stored on the CRM,
then email, then first and last name, then name: connectors/matching.py), and an item for every line (by
Code = SKU, then by Name). Only then does it create what is missing (the contact unless customer_matching
is strict, the items when create_products is on, otherwise ProductNotFound lists every unmatched line and
nothing was created), and finally the invoice (PUT /Invoices) or quote (PUT /Quotes).

Every PUT carries an Idempotency-Key derived from the run's key and the step (at most 128 characters, as
Xero allows), so a retried run gets Xero's first answers back instead of a second contact, item or
invoice.

Each call takes a unit of the organisation's budget first (storage/rate_limits.py: 60 calls a minute and 5
in flight per Xero organisation, counted per billflow tenant and Xero tenant); an exhausted budget raises
TransientError with the seconds to wait, as does Xero's own 429 (Retry-After) or a 5xx. Xero's validation
errors (Elements[].ValidationErrors[].Message) become TargetRejected carrying Xero's messages.

Connection settings: tenant_id (the xero-tenant-id of the organisation, required), client_id,
client_secret, refresh_token (and the access token kept by connectors/oauth.py), base_url (default
https://api.xero.com), token_url (default https://identity.xero.com/connect/token), customer_matching
("create_if_missing" or "strict"), create_products (default false), sales_account_code (the revenue
account for lines and new items; without it Xero uses the item's or refuses a final invoice).

Draft options: status (invoices DRAFT, SUBMITTED or AUTHORISED, default AUTHORISED; quotes DRAFT or SENT,
default DRAFT), date (YYYY-MM-DD, default today in UTC), tax_type (the TaxType of taxable lines),
tax_type_exempt (of the other lines), line_amount_types (Exclusive, Inclusive or NoTax), title (quotes).
The draft's memo becomes a quote's Summary; invoices have no such field in Xero's API.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode

from billflow.connectors import base, http, matching
from billflow.connectors.base import ConnectionReport, Connector, SendContext
from billflow.connectors.matching import same_text
from billflow.connectors.oauth import OAuthSession, TokenStore
from billflow.errors import AuthorizationRevoked, ConfigurationError, TargetRejected, TransientError
from billflow.models.documents import CustomerInfo, DispatchResult, InvoiceDraft, LineItem
from billflow.money import ROUNDING, minor_to_decimal, minor_unit_exponent, round_logged
from billflow.storage.rate_limits import XERO, RateLimiter, get_rate_limiter
from billflow.storage.secrets import Connection

TARGET = "xero"
DEFAULT_BASE_URL = "https://api.xero.com"
DEFAULT_TOKEN_URL = "https://identity.xero.com/connect/token"  # noqa: S105 - a URL, not a secret
API_PATH = "/api.xro/2.0"
MAX_IDEMPOTENCY_KEY = 128  # Xero's documented maximum
MAX_ITEM_CODE = 30
MAX_ITEM_NAME = 50
MAX_CONTACT_NUMBER = 50
MAX_CONTACT_NAME = 255
MAX_QUOTE_TITLE = 100
MAX_QUOTE_SUMMARY = 3000
QUOTE_UNIT_DECIMALS = 2  # PUT /Quotes has no unitdp parameter (PUT /Invoices does: up to 4)
INVOICE_STATUSES = ("DRAFT", "SUBMITTED", "AUTHORISED")
QUOTE_STATUSES = ("DRAFT", "SENT")
LINE_AMOUNT_TYPES = ("Exclusive", "Inclusive", "NoTax")  # quotes spell them in capitals
INVOICE_URL = "https://go.xero.com/AccountsReceivable/View.aspx?InvoiceID={id}"
# Placeholders in previews for ids only known once Xero has answered.
CONTACT_ID = "{contact.ContactID}"


# --- small helpers -----------------------------------------------------------------------------------
def step_key(idempotency_key: str, step: str) -> str:
    """The Idempotency-Key for one step of a run, within Xero's 128 characters."""
    return base.step_key(idempotency_key, step, MAX_IDEMPOTENCY_KEY)


def where_literal(value: str) -> str:
    """A string in a `where` filter (Dynamic LINQ): double quotes, an inner quote doubled."""
    return '"' + value.replace('"', '""') + '"'


def is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def item_code(sku: str | None, name: str) -> str:
    """The Code of an item billflow creates: the SKU, else the name; within Xero's 30 characters."""
    code = (sku or "").strip() or name.strip()
    if len(code) <= MAX_ITEM_CODE:
        return code
    return f"{code[:MAX_ITEM_CODE - 9]}-{hashlib.sha256(code.encode()).hexdigest()[:8]}"


def unique_codes(products: list[matching.ProductToCreate]) -> list[matching.ProductToCreate]:
    """One new item per Code. products_to_create already merges lines by SKU and by name; this also merges
    a SKU-less product whose name is another product's SKU, as both would get the same Code."""
    by_code: dict[str, matching.ProductToCreate] = {}
    for product in products:
        code = item_code(product.sku, product.name).casefold()
        if code in by_code:
            by_code[code].line_indexes.extend(product.line_indexes)
        else:
            by_code[code] = product
    return list(by_code.values())


def _option(draft: InvoiceDraft, name: str, allowed: tuple[str, ...], default: str | None) -> str | None:
    value = draft.options.get(name, default)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"xero option {name} must be one of {', '.join(allowed)}")
    for option in allowed:
        if value.casefold() == option.casefold():
            return option
    raise ConfigurationError(f"xero option {name} must be one of {', '.join(allowed)}, not {value!r}")


def _text_option(draft: InvoiceDraft, name: str) -> str | None:
    value = draft.options.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"xero option {name} must be text")
    return value


def document_date(draft: InvoiceDraft, today: date | None = None) -> date:
    raw = draft.options.get("date")
    if raw is None:
        return today or datetime.now(UTC).date()
    try:
        return date.fromisoformat(str(raw))
    except ValueError:
        raise ConfigurationError(f"xero option date must be YYYY-MM-DD, not {raw!r}") from None


# --- the request bodies, built once for sending and previewing ---------------------------------------
def contact_body(customer: CustomerInfo) -> dict[str, Any]:
    body: dict[str, Any] = {"Name": customer.name.strip()[:MAX_CONTACT_NAME]}
    if customer.first_name:
        body["FirstName"] = customer.first_name.strip()
    if customer.last_name:
        body["LastName"] = customer.last_name.strip()
    if customer.email:
        body["EmailAddress"] = customer.email.strip()
    if customer.tax_id:
        body["TaxNumber"] = customer.tax_id
    if customer.crm_company_id and len(customer.crm_company_id) <= MAX_CONTACT_NUMBER:
        body["ContactNumber"] = customer.crm_company_id  # Xero's field for an id from another system
    address = customer.address
    fields = {
        "AddressLine1": address.line1, "AddressLine2": address.line2, "City": address.city,
        "Region": address.state, "PostalCode": address.postal_code, "Country": address.country,
    }
    present = {k: v for k, v in fields.items() if v}
    if present:
        body["Addresses"] = [{"AddressType": "POBOX", **present}]  # POBOX is Xero's postal (billing) address
    return body


def item_body(product: matching.ProductToCreate, currency: str, account_code: str | None) -> dict[str, Any]:
    # Amounts go as JSON numbers: float is exact for the 2 to 4 decimals Xero takes (its repr is shortest).
    sales: dict[str, Any] = {"UnitPrice": float(minor_to_decimal(product.line.unit_amount_minor, currency))}
    if account_code:
        sales["AccountCode"] = account_code
    return {
        "Code": item_code(product.sku, product.name),
        "Name": product.name[:MAX_ITEM_NAME],
        "Description": product.line.description,
        "IsSold": True,
        "IsPurchased": False,
        "SalesDetails": sales,
    }


def line_body(
    draft: InvoiceDraft, line: LineItem, code: str | None, account_code: str | None
) -> dict[str, Any]:
    unit_amount = minor_to_decimal(line.unit_amount_minor, draft.currency)
    if draft.document_type == "estimate" and minor_unit_exponent(draft.currency) > QUOTE_UNIT_DECIMALS:
        unit_amount = round_logged(unit_amount, QUOTE_UNIT_DECIMALS, what=f"a Xero quote's unit price "
                                   f"({draft.currency.upper()}, {line.description[:40]!r})")
    body: dict[str, Any] = {
        "Description": line.description,
        "Quantity": line.quantity,
        "UnitAmount": float(unit_amount),
    }
    if line.discount_percent:
        body["DiscountRate"] = float(line.discount_percent)  # percent off the line, as Xero's LineItem takes it
    elif line.discount_amount_minor:
        body["DiscountAmount"] = float(minor_to_decimal(line.discount_amount_minor, draft.currency))
    if code:
        body["ItemCode"] = code
    if account_code:
        body["AccountCode"] = account_code
    tax_type = _text_option(draft, "tax_type" if line.taxable else "tax_type_exempt")
    if tax_type:
        body["TaxType"] = tax_type
    return body


def document_body(
    draft: InvoiceDraft, contact_id: str, codes: list[str | None], account_code: str | None,
    today: date | None = None,
) -> dict[str, Any]:
    """The invoice or quote, as Xero's Invoices/Quotes collection with one element."""
    day = document_date(draft, today)
    due = day + timedelta(days=draft.days_until_due or 0)
    lines = [line_body(draft, line, code, account_code) for line, code in zip(draft.lines, codes, strict=True)]
    amount_types = _option(draft, "line_amount_types", LINE_AMOUNT_TYPES, None)
    if draft.document_type == "estimate":
        doc: dict[str, Any] = {
            "Contact": {"ContactID": contact_id},
            "Date": day.isoformat(),
            "ExpiryDate": due.isoformat(),
            "Status": _option(draft, "status", QUOTE_STATUSES, "DRAFT"),
            "CurrencyCode": draft.currency.upper(),
            "LineItems": lines,
        }
        if draft.reference:
            doc["Reference"] = draft.reference
        title = _text_option(draft, "title")
        if title:
            doc["Title"] = title[:MAX_QUOTE_TITLE]
        if draft.memo:
            doc["Summary"] = draft.memo[:MAX_QUOTE_SUMMARY]
        if amount_types:
            doc["LineAmountTypes"] = amount_types.upper()
        return {"Quotes": [doc]}
    doc = {
        "Type": "ACCREC",
        "Contact": {"ContactID": contact_id},
        "Date": day.isoformat(),
        "DueDate": due.isoformat(),
        "Status": _option(draft, "status", INVOICE_STATUSES, "AUTHORISED"),
        "CurrencyCode": draft.currency.upper(),
        "LineItems": lines,
    }
    if draft.reference:
        doc["Reference"] = draft.reference
    if amount_types:
        doc["LineAmountTypes"] = amount_types
    return {"Invoices": [doc]}


def quote_roundings(draft: InvoiceDraft) -> list[dict[str, Any]]:
    """The unit prices a quote carries rounded: PUT /Quotes takes no unitdp, so Xero keeps two decimals of a
    unit amount; billflow rounds them itself (half up) and says so in the result, rather than let the
    third decimal of KWD, BHD... vanish unsaid."""
    if draft.document_type != "estimate" or minor_unit_exponent(draft.currency) <= QUOTE_UNIT_DECIMALS:
        return []
    found = []
    for number, line in enumerate(draft.lines, start=1):
        exact = minor_to_decimal(line.unit_amount_minor, draft.currency)
        rounded = exact.quantize(Decimal(1).scaleb(-QUOTE_UNIT_DECIMALS), rounding=ROUNDING)
        if rounded != exact:
            found.append({"line": number, "unit_amount": str(exact), "sent": str(rounded)})
    return found


def unit_decimal_places(currency: str) -> dict[str, str]:
    """Xero keeps 2 decimals of a unit amount unless asked for 4 (unitdp=4): needed for KWD, BHD..."""
    return {"unitdp": "4"} if minor_unit_exponent(currency) > 2 else {}


def check_draft(draft: InvoiceDraft) -> None:
    """Refuse, before any call, what Xero would refuse after billflow created a contact or items."""
    if draft.document_type not in XeroConnector.document_types:
        raise ConfigurationError(f"xero creates invoices and (for estimates) quotes, not {draft.document_type}")
    document_body(draft, CONTACT_ID, [None] * len(draft.lines), None)  # validates every option
    if not draft.customer.name.strip():
        raise ConfigurationError("xero needs the customer's name (a contact's Name is required)")


# --- errors --------------------------------------------------------------------------------------------
def xero_message(answer: http.HttpResponse) -> str:
    """Xero's own words: the validation messages of every element, else Message, else Detail."""
    try:
        doc = answer.json()
    except ValueError:
        return answer.body[:500].decode("utf-8", "replace")
    if not isinstance(doc, dict):
        return http.error_message(answer)
    messages = [
        str(error.get("Message"))
        for element in doc.get("Elements") or [] if isinstance(element, dict)
        for error in element.get("ValidationErrors") or [] if isinstance(error, dict) and error.get("Message")
    ]
    if messages:
        return "; ".join(dict.fromkeys(messages))[:1000]  # each message once, in order
    for key in ("Message", "Detail", "Title"):
        if isinstance(doc.get(key), str) and doc[key]:
            return str(doc[key])[:500]
    return http.error_message(answer)


def raise_for(answer: http.HttpResponse) -> None:
    if answer.status < 400:
        return
    message = f"xero answered {answer.status}: {xero_message(answer)}"
    if answer.status == 429 or answer.status >= 500:
        problem = answer.headers.get("x-rate-limit-problem")
        raise TransientError(message + (f" ({problem} limit)" if problem else ""),
                             retry_after_seconds=http.retry_after(answer.headers), status=answer.status)
    if answer.status == 403:  # the organisation is no longer connected to the app, or scopes were taken away
        raise AuthorizationRevoked(message + "; reconnect the Xero organisation", status=403)
    raise TargetRejected(message, status=answer.status)


# --- the API client -------------------------------------------------------------------------------
class _XeroApi:
    def __init__(
        self, connection: Connection, context: SendContext, limiter: RateLimiter,
        token_store: TokenStore | None,
    ) -> None:
        self.tenant_id = str(connection.require("tenant_id"))
        self.base_url = str(connection.settings.get("base_url") or DEFAULT_BASE_URL).rstrip("/") + API_PATH
        self.session = OAuthSession(connection, token_url=DEFAULT_TOKEN_URL, store=token_store)
        self.limiter = limiter
        self.scope = f"{context.tenant}#{self.tenant_id}"  # the budget of this organisation for this tenant
        self.calls = 0

    def call(
        self, method: str, path: str, *, query: Mapping[str, str] | None = None, body: Any = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        url = self.base_url + path + (f"?{urlencode(query)}" if query else "")
        headers = {"xero-tenant-id": self.tenant_id, "Accept": "application/json", "User-Agent": "billflow"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        with self.limiter.call(TARGET, self.scope, XERO):
            self.calls += 1
            answer = self.session.request(method, url, headers=headers, body=data, target=TARGET,
                                          raise_for_status=False)
        raise_for(answer)
        doc = answer.json()
        if not isinstance(doc, dict):
            raise TargetRejected(f"xero answered {method} {path} with something other than an object")
        return doc

    def find(self, path: str, collection: str, query: Mapping[str, str]) -> list[dict[str, Any]]:
        found = self.call("GET", path, query=query).get(collection) or []
        return [x for x in found if isinstance(x, dict)]


def _created(doc: dict[str, Any], collection: str, what: str) -> list[dict[str, Any]]:
    """The created elements; an element carrying ValidationErrors (summarizeErrors off) is a refusal."""
    elements = [e for e in doc.get(collection) or [] if isinstance(e, dict)]
    messages = [str(v.get("Message")) for e in elements for v in e.get("ValidationErrors") or []
                if isinstance(v, dict) and v.get("Message")]
    if messages or not elements:
        raise TargetRejected(f"xero did not create the {what}: {'; '.join(messages) or 'no element answered'}")
    return elements


# --- the connector --------------------------------------------------------------------------------
class XeroConnector(Connector):
    kind = "xero"
    document_types = frozenset({"invoice", "estimate"})

    def __init__(self, *, rate_limiter: RateLimiter | None = None, token_store: TokenStore | None = None):
        self._rate_limiter = rate_limiter
        self._token_store = token_store

    def create_document(
        self, draft: InvoiceDraft, connection: Connection, context: SendContext
    ) -> DispatchResult:
        check_draft(draft)
        mode = matching.customer_matching_mode(connection)
        create_products = matching.flag_setting(connection, "create_products")
        account_code = connection.settings.get("sales_account_code") or None
        api = _XeroApi(connection, context, self._rate_limiter or get_rate_limiter(), self._token_store)
        key = context.idempotency_key

        # 1. Resolve everything: nothing is created while something could still refuse the send.
        match = matching.find_customer(draft.customer, lambda c: self._find_contact(api, c))
        matching.require_customer(match, mode=mode, target="Xero")
        products = matching.match_products(
            draft.lines, lambda c: self._find_item(api, c), create_missing=create_products, target="Xero"
        )

        # 2. Create what is missing.
        contact = match.found
        if contact is None:
            answer = api.call("PUT", "/Contacts", body={"Contacts": [contact_body(draft.customer)]},
                              idempotency_key=step_key(key, "contact"))
            contact = _created(answer, "Contacts", "contact")[0]
        codes: list[str | None] = [str(m.found["Code"]) if m.found else None for m in products]
        wanted = unique_codes(matching.products_to_create(products))
        if wanted:
            answer = api.call(
                "PUT", "/Items", query=unit_decimal_places(draft.currency),
                body={"Items": [item_body(p, draft.currency, account_code) for p in wanted]},
                idempotency_key=step_key(key, "items"),
            )
            made = _created(answer, "Items", "items")
            if len(made) != len(wanted):
                raise TargetRejected(f"xero created {len(made)} of {len(wanted)} items")
            for product, item in zip(wanted, made, strict=True):
                for index in product.line_indexes:
                    codes[index] = str(item["Code"])

        # 3. The document itself.
        contact_id = str(contact["ContactID"])
        body = document_body(draft, contact_id, codes, account_code)
        if draft.document_type == "estimate":
            answer = api.call("PUT", "/Quotes", body=body, idempotency_key=step_key(key, "quote"))
            document = _created(answer, "Quotes", "quote")[0]
            external_id, number, url = document.get("QuoteID"), document.get("QuoteNumber"), None
        else:
            answer = api.call("PUT", "/Invoices", query=unit_decimal_places(draft.currency), body=body,
                              idempotency_key=step_key(key, "invoice"))
            document = _created(answer, "Invoices", "invoice")[0]
            external_id, number = document.get("InvoiceID"), document.get("InvoiceNumber")
            url = INVOICE_URL.format(id=quote(str(external_id), safe="")) if external_id else None
        return DispatchResult(
            external_id=str(external_id) if external_id else None,
            external_url=url,
            details={
                "document": "quote" if draft.document_type == "estimate" else "invoice",
                "number": number,
                "status": document.get("Status"),
                "total": document.get("Total"),
                "amount_due": document.get("AmountDue"),
                "currency": document.get("CurrencyCode"),
                "contact_id": contact_id,
                "customer_id": contact_id,  # the name write-back reads (customer_id_field), as elsewhere
                "contact_created": match.found is None,
                "contact_matched_by": match.criterion.field if match.criterion else None,
                "items_created": [item_code(p.sku, p.name) for p in wanted],
                "unit_amounts_rounded": quote_roundings(draft),
                "api_calls": api.calls,
            },
        )

    def test_connection(self, connection: Connection, tenant: str) -> ConnectionReport:
        """GET /Organisation: the organisation the grant reaches, its base currency and tax settings."""
        api = _XeroApi(connection, SendContext(tenant, "connection-test"),
                       self._rate_limiter or get_rate_limiter(), self._token_store)
        organisations = api.call("GET", "/Organisation").get("Organisations") or [{}]
        org = organisations[0] if isinstance(organisations[0], dict) else {}
        country = org.get("CountryCode")
        basis = org.get("SalesTaxBasis")
        regime = ", ".join(part for part in (
            str(country) if country else "", f"sales tax basis {basis}" if basis else "",
            "tax number on file" if org.get("TaxNumber") else "") if part) or None
        scopes = str(connection.settings.get("scope") or "").split()
        allowed = ("accounting.transactions" in scopes) if scopes else None
        notes = [] if scopes else ["the grant's scopes are not stored with the connection: creating invoices and "
                                   "quotes needs accounting.transactions (and accounting.contacts, "
                                   "accounting.settings for contacts and items)"]
        return ConnectionReport(
            connection=connection.name, kind=self.kind, checked="GET /Organisation",
            account_name=org.get("Name"), account_id=org.get("OrganisationID") or api.tenant_id,
            currency=org.get("BaseCurrency"), tax_regime=regime,
            can_create={"invoice": allowed, "estimate": allowed}, notes=notes)

    def preview_document(
        self, draft: InvoiceDraft, connection: Connection, context: SendContext
    ) -> list[dict[str, Any]]:
        """The requests create_document would make, in order; nothing is sent.

        Ids Xero has not given yet appear as {contact.ContactID}; items matched at send time keep their
        lines' SKUs as ItemCode here. Steps that depend on what a lookup finds say so in "when".
        """
        check_draft(draft)
        mode = matching.customer_matching_mode(connection)
        create_products = matching.flag_setting(connection, "create_products")
        account_code = connection.settings.get("sales_account_code") or None
        base_url = str(connection.settings.get("base_url") or DEFAULT_BASE_URL).rstrip("/") + API_PATH
        key = context.idempotency_key
        steps: list[dict[str, Any]] = []

        def add(step: str, method: str, path: str, *, query: dict[str, str] | None = None,
                body: Any = None, when: str | None = None, keyed: bool = False) -> None:
            url = base_url + path + (f"?{urlencode(query)}" if query else "")
            steps.append({"step": step, "method": method, "path": path, "url": url, "query": query or {},
                          "body": body, "idempotency_key": step_key(key, step) if keyed else None,
                          **({"when": when} if when else {})})

        for criterion in matching.customer_criteria(draft.customer):
            query = self._contact_query(criterion)
            if query is not None:
                add(f"find_contact_by_{criterion.field}", "GET", "/Contacts", query=query,
                    when=None if not steps else "no contact found yet")
        if mode == matching.CREATE_IF_MISSING:
            add("contact", "PUT", "/Contacts", body={"Contacts": [contact_body(draft.customer)]},
                when="no contact found", keyed=True)
        else:
            steps.append({"step": "fail", "when": "no contact found", "error": "CustomerNotFound"})
        for index, line in enumerate(draft.lines):
            for position, wanted in enumerate(matching.product_criteria(line)):
                add(f"find_item_by_{wanted.field}:{index}", "GET", "/Items",
                    query={"where": self._item_where(wanted)}, when="no item found by Code" if position else None)
        if create_products:
            products: list[matching.ProductMatch[Any]] = [
                matching.ProductMatch(i, line, None) for i, line in enumerate(draft.lines)
            ]
            add("items", "PUT", "/Items", query=unit_decimal_places(draft.currency),
                body={"Items": [item_body(p, draft.currency, account_code)
                                for p in unique_codes(matching.products_to_create(products))]},
                when="some lines match no item (only those are created)", keyed=True)
        else:
            steps.append({"step": "fail", "when": "a line matches no item", "error": "ProductNotFound"})
        codes: list[str | None] = [(line.sku or "").strip() or None for line in draft.lines]
        body = document_body(draft, CONTACT_ID, codes, account_code)
        if draft.document_type == "estimate":
            add("quote", "PUT", "/Quotes", body=body, keyed=True)
        else:
            add("invoice", "PUT", "/Invoices", query=unit_decimal_places(draft.currency), body=body, keyed=True)
        return steps

    # --- lookups -----------------------------------------------------------------------------------
    @staticmethod
    def _contact_query(criterion: matching.CustomerCriterion) -> dict[str, str] | None:
        if criterion.field == "id":
            return {"IDs": criterion.value} if is_guid(criterion.value) else None
        if criterion.field == "email":
            return {"where": f"EmailAddress=={where_literal(criterion.value)}"}
        if criterion.field == "person_name":
            first, last = criterion.values
            return {"where": f"FirstName=={where_literal(first)} AND LastName=={where_literal(last)}"}
        return {"where": f"Name=={where_literal(criterion.value[:MAX_CONTACT_NAME])}"}

    def _find_contact(self, api: _XeroApi, criterion: matching.CustomerCriterion) -> dict[str, Any] | None:
        """Active contacts only (Xero leaves archived ones out unless includeArchived=true)."""
        query = self._contact_query(criterion)
        if query is None:
            return None  # a stored id that is not a GUID cannot be a Xero ContactID
        def matches(contact: dict[str, Any]) -> bool:
            if criterion.field == "id":
                return same_text(contact.get("ContactID"), criterion.value)
            if criterion.field == "email":
                return same_text(contact.get("EmailAddress"), criterion.value)
            if criterion.field == "person_name":
                return same_text(contact.get("FirstName"), criterion.values[0]) \
                    and same_text(contact.get("LastName"), criterion.values[1])
            return same_text(contact.get("Name"), criterion.value[:MAX_CONTACT_NAME])

        hits = [c for c in api.find("/Contacts", "Contacts", query) if matches(c)]
        return matching.single_match(hits, criterion, target="Xero",
                                     describe=lambda c: f"ContactID {c.get('ContactID')} {c.get('Name')!r}")

    @staticmethod
    def _item_value(criterion: matching.ProductCriterion) -> str:
        # Names of items billflow creates are cut to Xero's 50 characters: look them up the same way.
        return criterion.value if criterion.field == "sku" else criterion.value[:MAX_ITEM_NAME]

    @classmethod
    def _item_where(cls, criterion: matching.ProductCriterion) -> str:
        field = "Code" if criterion.field == "sku" else "Name"
        return f"{field}=={where_literal(cls._item_value(criterion))}"

    def _find_item(self, api: _XeroApi, criterion: matching.ProductCriterion) -> dict[str, Any] | None:
        field = "Code" if criterion.field == "sku" else "Name"
        value = self._item_value(criterion)
        for item in api.find("/Items", "Items", {"where": self._item_where(criterion)}):
            if same_text(item.get(field), value) and item.get("Code"):
                return item
        return None
