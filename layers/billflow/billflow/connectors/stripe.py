"""Stripe invoices: find or create the customer, create a draft, add one item per line, finalize, send.

Every POST carries an Idempotency-Key derived from the run's key and the step, so a retried run (the state
machine retries TransientError) replays Stripe's first answers instead of creating a second customer,
invoice or item. Stripe keeps keys for 24 hours; a retry later than that would create new objects.

Requests are form-encoded in Stripe's bracket notation and pinned to the API version the contract tests
validate against (Stripe-Version), so an account's default version cannot change the answers' shape.

Connection settings: api_key (required), base_url (default https://api.stripe.com), customer_matching
("create_if_missing", the default, or "strict": never create customers).
Draft options: finalize (default true), send (default false), tax_rates (tax rate ids), tax_rates_on
("invoice", the default: every line not marked non-taxable, through the invoice's default_tax_rates when no
line is so marked and on each taxed line otherwise; or "taxable_lines": only lines marked taxable).

Line discounts (a CRM line item's discount percent or amount) become a negative invoice item right after
the line ("Discount: <line> (10%)"), with the line's tax rates: Stripe's invoice items take negative amounts
for discounts and credits, which keeps the discount visible on the invoice without creating a coupon per
percentage in the account.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode

from billflow.connectors import base, http, matching
from billflow.connectors.base import ConnectionReport, Connector, SendContext
from billflow.errors import ConfigurationError, TargetRejected
from billflow.models.documents import CustomerInfo, DispatchResult, InvoiceDraft, LineItem
from billflow.money import check_maximum, to_target_minor
from billflow.storage.secrets import Connection

API_VERSION = "2023-08-16"
DEFAULT_BASE_URL = "https://api.stripe.com"
TARGET = "stripe"
LOOKUP_LIMIT = 10
TAX_RATES_ON = ("invoice", "taxable_lines")
# Stripe's documented limits: idempotency keys up to 255 characters; metadata up to 50 keys, key names
# up to 40 characters, values up to 500; invoice custom field values up to 30 characters (the spec).
MAX_IDEMPOTENCY_KEY = 255
MAX_METADATA_KEYS = 50
MAX_METADATA_KEY = 40
MAX_METADATA_VALUE = 500
MAX_CUSTOM_FIELD = 30
MAX_INVOICE_DESCRIPTION = 1500  # maxLength of description in POST /v1/invoices
# Placeholders in previews for ids only known once Stripe has answered.
CUSTOMER_ID = "{customer.id}"
INVOICE_ID = "{invoice.id}"


# --- form encoding --------------------------------------------------------------------------------
def encode_form(params: Mapping[str, Any]) -> str:
    """Stripe's bracket notation: {"a": {"b": [1, True]}} -> "a[b][0]=1&a[b][1]=true".

    None values and empty containers are left out (as Stripe's own libraries do); pass "" to unset a field.
    """
    return urlencode(list(_flatten(params, None)))


def _flatten(value: Any, name: str | None) -> Iterator[tuple[str, str]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or not key or "[" in key or "]" in key:
                raise ValueError(f"parameter name {key!r} cannot be written in bracket notation")
            yield from _flatten(item, key if name is None else f"{name}[{key}]")
        return
    if name is None:
        raise TypeError("encode_form takes a mapping of parameters")
    if value is None:
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _flatten(item, f"{name}[{index}]")
    elif isinstance(value, bool):  # before int: bool is an int
        yield name, "true" if value else "false"
    elif isinstance(value, int | str):
        yield name, str(value)
    elif isinstance(value, float | Decimal):
        yield name, format(Decimal(str(value)), "f")
    else:
        raise TypeError(f"{name}: cannot form-encode {type(value).__name__}")


def search_literal(text: str) -> str:
    """A quoted string for Stripe's search query language: backslash-escape backslashes and quotes."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def customer_key(customer: CustomerInfo, params: Mapping[str, Any], idempotency_key: str) -> str:
    """One key per CRM company (else per run): concurrent first deals of a new company create one customer,
    the others get Stripe's first answer (or a 409 while it is in progress, retried) instead of a duplicate."""
    if not customer.crm_company_id:
        return step_key(idempotency_key, "customer")
    # The same parameters under the same key: Stripe refuses a key reused with other parameters.
    identity = json.dumps([customer.crm_company_id, params], sort_keys=True, default=str)
    return "billflow-customer-" + hashlib.sha256(identity.encode()).hexdigest()


def step_key(idempotency_key: str, step: str) -> str:
    """The Idempotency-Key for one step of a run, within Stripe's 255 characters."""
    return base.step_key(idempotency_key, step, MAX_IDEMPOTENCY_KEY)


# --- the requests, built once for sending and previewing ------------------------------------------
def customer_params(customer: CustomerInfo) -> dict[str, Any]:
    address = {k: v for k, v in customer.address.model_dump().items() if v not in (None, "")}
    params: dict[str, Any] = {"name": customer.name, "email": customer.email, "address": address or None}
    if customer.crm_company_id:
        params["metadata"] = {"crm_company_id": customer.crm_company_id}
    return params


def invoice_params(draft: InvoiceDraft, customer_id: str) -> dict[str, Any]:
    params: dict[str, Any] = {
        "customer": customer_id,
        "collection_method": "send_invoice",  # an invoice the customer pays, not a charge on a saved card
        "days_until_due": draft.days_until_due if draft.days_until_due is not None else 30,
        "currency": draft.currency.lower(),
        "description": draft.memo,
        "auto_advance": False,  # billflow finalizes and sends explicitly; Stripe must not act on its own
        "pending_invoice_items_behavior": "exclude",  # only the lines of this draft, never stray items
        "metadata": dict(draft.metadata) or None,
    }
    if draft.reference:
        if len(draft.reference) <= MAX_CUSTOM_FIELD:  # printed on the invoice, where a reference belongs
            params["custom_fields"] = [{"name": "Reference", "value": draft.reference}]
        else:
            params["metadata"] = {"reference": draft.reference, **draft.metadata}
    tax_rates, tax_rates_on = _tax_options(draft)
    if tax_rates and tax_rates_on == "invoice" and not _marked_not_taxable(draft):
        params["default_tax_rates"] = tax_rates
    return params


def _marked_not_taxable(draft: InvoiceDraft) -> bool:
    """Whether a line is marked not taxable. Stripe applies default_tax_rates "to any line item that does not
    have `tax_rates` set", and an empty tax_rates in form encoding ("tax_rates=") reads as not set: so an
    invoice with such a line gets its rates on each of its other lines instead of as the invoice's default."""
    return any(line.taxable is False for line in draft.lines)


def item_params(draft: InvoiceDraft, line: LineItem, customer_id: str, invoice_id: str) -> dict[str, Any]:
    params: dict[str, Any] = {
        "customer": customer_id,
        "invoice": invoice_id,
        "currency": draft.currency.lower(),
        "description": line.description,
    }
    quantity = Decimal(str(line.quantity))
    if quantity >= 0 and quantity == quantity.to_integral_value():
        # The draft's ISO minor unit in Stripe's own (the same but for MGA and ISK, see money.py).
        params["quantity"] = int(quantity)
        params["unit_amount"] = to_target_minor(line.unit_amount_minor, draft.currency, TARGET,
                                                what=f"the unit price of {line.description[:40]!r}")
    else:
        # Stripe's quantity (API 2023-08-16) is a non-negative integer: a fractional or negative quantity
        # becomes the line's total, rounded (and logged) to Stripe's unit.
        params["amount"] = to_target_minor(quantity * line.unit_amount_minor, draft.currency, TARGET,
                                           what=f"the total of {line.description[:40]!r}")
    tax_rates, tax_rates_on = _tax_options(draft)
    on_this_line = bool(line.taxable) if tax_rates_on == "taxable_lines" else (
        _marked_not_taxable(draft) and line.taxable is not False)  # else the invoice's default_tax_rates
    if tax_rates and on_this_line:
        params["tax_rates"] = tax_rates
    params["metadata"] = _line_metadata(draft, line) or None
    return params


def discount_params(draft: InvoiceDraft, line: LineItem, customer_id: str, invoice_id: str) -> dict[str, Any] | None:
    """The negative invoice item of a discounted line (None for a line without discount)."""
    off = line.discount_minor()
    if off <= 0:
        return None
    label = f"{line.discount_percent.normalize():f}%" if line.discount_percent else "amount"
    params: dict[str, Any] = {
        "customer": customer_id, "invoice": invoice_id, "currency": draft.currency.lower(),
        "description": f"Discount: {line.description} ({label})"[:500],
        "amount": -to_target_minor(off, draft.currency, TARGET, what=f"the discount of {line.description[:40]!r}"),
    }
    line_params = item_params(draft, line, customer_id, invoice_id)
    if "tax_rates" in line_params:
        params["tax_rates"] = line_params["tax_rates"]  # taxed as the line it reduces
    params["metadata"] = {**_line_metadata(draft, line), "discount_of_line": str(draft.lines.index(line) + 1)}
    return params


def draft_items(draft: InvoiceDraft, customer_id: str, invoice_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(idempotency step, params) of every invoice item: each line, then its discount if it has one."""
    items: list[tuple[str, dict[str, Any]]] = []
    for index, line in enumerate(draft.lines):
        items.append((f"item:{index}", item_params(draft, line, customer_id, invoice_id)))
        discount = discount_params(draft, line, customer_id, invoice_id)
        if discount is not None:
            items.append((f"discount:{index}", discount))
    return items


def _line_metadata(draft: InvoiceDraft, line: LineItem) -> dict[str, str]:
    metadata = dict(draft.metadata)  # each item points back to the CRM record too
    if line.sku:
        metadata["sku"] = line.sku
    if line.product_name:
        metadata["product_name"] = line.product_name
    return metadata


def _tax_options(draft: InvoiceDraft) -> tuple[list[str], str]:
    rates = draft.options.get("tax_rates") or []
    if isinstance(rates, str):
        rates = [rates]
    if not isinstance(rates, list) or not all(isinstance(r, str) and r for r in rates):
        raise ConfigurationError("stripe option tax_rates must be a list of tax rate ids")
    where = draft.options.get("tax_rates_on", "invoice")
    if where not in TAX_RATES_ON:
        raise ConfigurationError(f"stripe option tax_rates_on must be one of {', '.join(TAX_RATES_ON)}")
    return rates, where


def _flag(draft: InvoiceDraft, name: str, default: bool) -> bool:
    value = draft.options.get(name, default)
    if not isinstance(value, bool):
        raise ConfigurationError(f"stripe option {name} must be true or false")
    return value


def _check_draft(draft: InvoiceDraft) -> tuple[bool, bool]:
    """Refuse, before any call, what Stripe would refuse half way (leaving a customer or a draft behind)."""
    if draft.document_type not in StripeConnector.document_types:
        raise ConfigurationError(f"stripe creates invoices, not {draft.document_type}")
    finalize, send = _flag(draft, "finalize", True), _flag(draft, "send", False)
    if send and not finalize:
        raise ConfigurationError("stripe cannot send an invoice left as a draft (send needs finalize)")
    if draft.memo and len(draft.memo) > MAX_INVOICE_DESCRIPTION:
        raise TargetRejected(f"stripe takes invoice memos of at most {MAX_INVOICE_DESCRIPTION} characters")
    items = [params for _, params in draft_items(draft, CUSTOMER_ID, INVOICE_ID)]
    for params in [invoice_params(draft, CUSTOMER_ID), *items]:
        _check_metadata(params.get("metadata") or {})
    totals = [int(p["amount"]) if "amount" in p else int(p["unit_amount"]) * int(p["quantity"]) for p in items]
    check_maximum([*((f"line {n}", t) for n, t in enumerate(totals, start=1)), ("the invoice", sum(totals))],
                  draft.currency, TARGET)
    return finalize, send


def _check_metadata(metadata: Mapping[str, str]) -> None:
    if len(metadata) > MAX_METADATA_KEYS:
        raise TargetRejected(f"stripe takes at most {MAX_METADATA_KEYS} metadata keys, got {len(metadata)}")
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY or "[" in key or "]" in key:
            raise TargetRejected(
                f"stripe metadata key {key[:60]!r}: at most {MAX_METADATA_KEY} characters, no square brackets"
            )
        if len(value) > MAX_METADATA_VALUE:
            raise TargetRejected(
                f"stripe metadata value of {key!r} is longer than {MAX_METADATA_VALUE} characters"
            )


def customer_lookup(criterion: matching.CustomerCriterion) -> tuple[str, dict[str, Any]]:
    """The GET for one lookup: the stored id read directly, the email through the list's (case-sensitive)
    email filter, names through the search API; up to 10 answers, so that a second match is seen."""
    if criterion.field == "id":
        return f"/v1/customers/{quote(criterion.value, safe='')}", {}
    if criterion.field == "email":
        return "/v1/customers", {"email": criterion.value, "limit": LOOKUP_LIMIT}
    return "/v1/customers/search", {"query": f"name:{search_literal(criterion.value)}", "limit": LOOKUP_LIMIT}


# --- the API client -------------------------------------------------------------------------------
class _StripeApi:
    def __init__(self, connection: Connection) -> None:
        self._api_key = str(connection.require("api_key"))
        self.base_url = str(connection.settings.get("base_url") or DEFAULT_BASE_URL).rstrip("/")

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}", "Stripe-Version": API_VERSION,
                "User-Agent": "billflow"}

    def get(self, path: str, params: Mapping[str, Any] | None = None, *, missing_ok: bool = False) -> Any:
        url = self.base_url + path + (f"?{encode_form(params)}" if params else "")
        answer = http.request("GET", url, headers=self._headers(), target=TARGET, raise_for_status=False)
        if missing_ok and answer.status == 404 and _error_code(answer) == "resource_missing":
            return None
        http.raise_for(answer, TARGET)
        return answer.json()

    def post(self, path: str, params: Mapping[str, Any], idempotency_key: str) -> Any:
        headers = {**self._headers(), "Content-Type": "application/x-www-form-urlencoded",
                   "Idempotency-Key": idempotency_key}
        body = encode_form(params).encode()
        return http.request("POST", self.base_url + path, headers=headers, body=body, target=TARGET).json()


def _error_code(answer: http.HttpResponse) -> str | None:
    try:
        doc = answer.json()
    except ValueError:
        return None
    error = doc.get("error") if isinstance(doc, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


# --- the connector --------------------------------------------------------------------------------
class StripeConnector(Connector):
    kind = "stripe"
    document_types = frozenset({"invoice"})

    def create_document(
        self, draft: InvoiceDraft, connection: Connection, context: SendContext
    ) -> DispatchResult:
        finalize, send = _check_draft(draft)
        mode = matching.customer_matching_mode(connection)
        api = _StripeApi(connection)
        key = context.idempotency_key

        match = matching.find_customer(draft.customer, lambda criterion: self._find_customer(api, criterion))
        matching.require_customer(match, mode=mode, target="Stripe")
        customer = match.found
        created = customer is None
        if customer is None:
            params = customer_params(draft.customer)
            customer = api.post("/v1/customers", params, customer_key(draft.customer, params, key))
        customer_id = str(customer["id"])

        invoice = api.post("/v1/invoices", invoice_params(draft, customer_id), step_key(key, "invoice"))
        invoice_id = str(invoice["id"])
        for step, params in draft_items(draft, customer_id, invoice_id):
            api.post("/v1/invoiceitems", params, step_key(key, step))
        if finalize:
            invoice = api.post(f"/v1/invoices/{quote(invoice_id, safe='')}/finalize", {},
                               step_key(key, "finalize"))
        if send:
            invoice = api.post(f"/v1/invoices/{quote(invoice_id, safe='')}/send", {}, step_key(key, "send"))

        return DispatchResult(
            external_id=invoice_id,
            external_url=invoice.get("hosted_invoice_url") or None,
            details={
                "customer_id": customer_id,
                "customer_created": created,
                "invoice_status": invoice.get("status"),
                "invoice_number": invoice.get("number"),
                "amount_due": invoice.get("amount_due"),
                "currency": invoice.get("currency"),
            },
        )

    def preview_document(
        self, draft: InvoiceDraft, connection: Connection, context: SendContext
    ) -> list[dict[str, Any]]:
        """The requests create_document would make, in order; nothing is sent and no key is needed.

        Ids Stripe has not given yet appear as {customer.id} and {invoice.id}; steps that depend on what a
        lookup finds say so in "when".
        """
        finalize, send = _check_draft(draft)
        mode = matching.customer_matching_mode(connection)
        base_url = str(connection.settings.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        key = context.idempotency_key
        steps: list[dict[str, Any]] = []

        def lookup(step: str, path: str, params: dict[str, Any], when: str | None = None) -> None:
            steps.append({"step": step, "method": "GET", "path": path, "url": base_url + path,
                          "params": params, "query": encode_form(params), "idempotency_key": None,
                          **({"when": when} if when else {})})

        def post(step: str, path: str, params: dict[str, Any], when: str | None = None) -> None:
            steps.append({"step": step, "method": "POST", "path": path, "url": base_url + path,
                          "params": params, "form": encode_form(params),
                          "idempotency_key": step_key(key, step), **({"when": when} if when else {})})

        for index, criterion in enumerate(matching.customer_criteria(draft.customer)):
            path, params = customer_lookup(criterion)
            lookup(f"find_customer_by_{criterion.field}", path, params,
                   when="no customer found yet" if index else None)
        if mode == matching.CREATE_IF_MISSING:
            post("customer", "/v1/customers", customer_params(draft.customer), when="no customer found")
        else:
            steps.append({"step": "fail", "when": "no customer found", "error": "CustomerNotFound"})
        post("invoice", "/v1/invoices", invoice_params(draft, CUSTOMER_ID))
        for step, params in draft_items(draft, CUSTOMER_ID, INVOICE_ID):
            post(step, "/v1/invoiceitems", params)
        if finalize:
            post("finalize", f"/v1/invoices/{INVOICE_ID}/finalize", {})
        if send:
            post("send", f"/v1/invoices/{INVOICE_ID}/send", {})
        return steps

    def test_connection(self, connection: Connection, tenant: str) -> ConnectionReport:
        """GET /v1/account: the account the key reaches, its name and default currency."""
        account = _StripeApi(connection).get("/v1/account")
        settings = account.get("settings") or {}
        name = (settings.get("dashboard") or {}).get("display_name") or \
            (account.get("business_profile") or {}).get("name") or account.get("email")
        restricted = str(connection.settings.get("api_key", "")).startswith("rk_")
        notes = [f"country {account['country']}"] if account.get("country") else []
        if restricted:
            notes.append("a restricted key: whether it may write invoices is only known from the Dashboard's "
                         "key permissions (Invoices and Customers: write)")
        if account.get("charges_enabled") is False:
            notes.append("charges are not enabled on this account yet: invoices can be created, not paid")
        return ConnectionReport(
            connection=connection.name, kind=self.kind, checked="GET /v1/account",
            account_name=name, account_id=account.get("id"),
            currency=str(account["default_currency"]).upper() if account.get("default_currency") else None,
            tax_regime="tax rates chosen per rule (options tax_rates, tax_rates_on)",
            can_create={"invoice": None if restricted else True}, notes=notes)

    # --- customers -------------------------------------------------------------------------------
    @staticmethod
    def _find_customer(api: _StripeApi, criterion: matching.CustomerCriterion) -> dict[str, Any] | None:
        """One lookup (connectors/matching.py decides the order); a deleted customer does not count, and
        several matches are not guessed from."""
        path, params = customer_lookup(criterion)
        if criterion.field == "id":
            found = api.get(path, missing_ok=True)
            return found if isinstance(found, dict) and not found.get("deleted") else None
        page = api.get(path, params)
        hits = [c for c in page.get("data") or [] if isinstance(c, dict) and (
            c.get("email") == criterion.value if criterion.field == "email"  # Stripe compares emails exactly
            else matching.same_text(c.get("name"), criterion.value))]
        return matching.single_match(hits, criterion, target="Stripe",
                                     describe=lambda c: f"{c.get('id')} {c.get('name')!r}")
