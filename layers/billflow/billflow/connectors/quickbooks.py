"""QuickBooks Online: invoices, estimates, sales receipts, paid invoices, refund receipts and expenses.

What QuickBooks users expect from a CRM integration (HubSpot's QuickBooks workflow actions):
- the customer is matched by the id stored on the CRM, then email, then first and last name, then display
  name; created when missing unless customer_matching is "strict" (see connectors/matching.py);
- every line must match a QuickBooks product (by SKU, then name); a missing product is created only when
  create_products is on, otherwise nothing at all is created and the error lists every unmatched line;
- payment terms: days_until_due sets the DueDate, a rule's sales_term_id sets SalesTermRef;
- a paid invoice is an invoice plus a Payment for its total, and only for non-taxable lines;
- refund receipts and expenses (Purchase) for payment-based workflows.

Currencies: the company's preferences are read first (GET /preferences: MultiCurrencyEnabled,
HomeCurrency). A document in another currency than the home currency is refused when multicurrency is off;
otherwise customers are created in the document's currency (CurrencyRef), a matched customer in another
currency is refused (QuickBooks keeps one currency per customer), and the document carries ExchangeRate:
the rule's exchange_rate option, else QuickBooks' own rate for the transaction date (GET /exchangerate).

Everything is resolved (currency, customer, products, configuration, tax codes) before the first create, so a
refusal never leaves a half-built document behind. Every create carries Intuit's `requestid` (derived from
the run's idempotency key and the step, at most 50 characters): a retried run gets QuickBooks' first
answer back instead of a second customer, item, invoice or payment.

Connection settings: realm_id (required), client_id, client_secret, refresh_token (OAuth, see oauth.py),
base_url (default https://quickbooks.api.intuit.com; sandbox: https://sandbox-quickbooks.api.intuit.com),
minor_version (default "75"), customer_matching (create_if_missing | strict), create_products (bool),
income_account_id (for created items), item_type (Service | NonInventory), default_item_id (the product
for lines that name none, e.g. QuickBooks' "Services" item), region or country (e.g. "GB"),
tax_codes_required (default: true for QuickBooks' VAT/GST editions), default_tax_code (a TaxCode id),
non_taxable_tax_code, deposit_account_id, refund_account_id, expense_account_id, payment_account_id,
payment_type (Cash | Check | CreditCard), app_url (default https://app.qbo.intuit.com).
Draft options (from the rule) override the same names, plus sales_term_id, payment_method_id, vendor_id,
doc_number, txn_date (YYYY-MM-DD), expiration_days (estimates), amounts_include_tax, exchange_rate.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote, urlencode

from billflow.connectors import http
from billflow.connectors.base import ConnectionReport, Connector, SendContext
from billflow.connectors.matching import (
    STRICT,
    CustomerCriterion,
    CustomerMatch,
    ProductCriterion,
    ProductMatch,
    ProductToCreate,
    customer_criteria,
    customer_matching_mode,
    find_customer,
    flag_setting,
    match_products,
    product_criteria,
    products_to_create,
    require_customer,
    single_match,
)
from billflow.connectors.oauth import OAuthSession
from billflow.errors import ConfigurationError, TargetRejected, TransientError
from billflow.models.documents import CustomerInfo, DispatchResult, InvoiceDraft, LineItem
from billflow.money import exchange_rate, minor_to_decimal, minor_unit_exponent
from billflow.storage.secrets import Connection

TARGET = "quickbooks"
DISPLAY = "QuickBooks"
DEFAULT_BASE_URL = "https://quickbooks.api.intuit.com"
DEFAULT_APP_URL = "https://app.qbo.intuit.com"
TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"  # noqa: S105 (a URL)
DEFAULT_MINOR_VERSION = "75"
MAX_REQUEST_ID = 50  # Intuit: requestid is at most 50 characters, unique per company

ENTITY_BY_TYPE = {
    "invoice": "Invoice",
    "paid_invoice": "Invoice",
    "estimate": "Estimate",
    "sales_receipt": "SalesReceipt",
    "refund_receipt": "RefundReceipt",
    "expense": "Purchase",
}
APP_PAGES = {"Invoice": "invoice", "Estimate": "estimate", "SalesReceipt": "salesreceipt",
             "RefundReceipt": "refundreceipt", "Purchase": "expense"}
# QuickBooks' VAT/GST editions want a TaxCodeRef on every line once tax is set up ("Make sure all your
# transactions have a VAT rate"); the US edition takes TAX/NON instead.
TAX_CODE_REGIONS = frozenset({"GB", "UK", "IE", "AU", "CA", "IN", "FR"})
US_TAXABLE, US_NON_TAXABLE = "TAX", "NON"
ITEM_TYPES = ("Service", "NonInventory")
PAYMENT_TYPES = ("Cash", "Check", "CreditCard")
OBJECT_NOT_FOUND = "610"  # Intuit's code for reading an id that does not exist (answered as a 400)
# Intuit's field limits (API reference): names cannot hold a colon (it separates sub-item/sub-customer
# names), tabs or newlines.
MAX_DISPLAY_NAME, MAX_NAME_PART, MAX_ITEM_NAME, MAX_SKU = 500, 100, 100, 100
MAX_DOC_NUMBER, MAX_PRIVATE_NOTE, MAX_CUSTOMER_MEMO, MAX_DESCRIPTION = 21, 4000, 1000, 4000

# Placeholders in previews for ids QuickBooks has not given yet.
CUSTOMER_ID = "{customer.Id}"
DOCUMENT_ID = "{document.Id}"


# --- small pure helpers ----------------------------------------------------------------------------
def query_literal(text: str) -> str:
    """A quoted string for Intuit's query language: a backslash escapes quotes and backslashes."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def request_id(idempotency_key: str, step: str) -> str:
    """Intuit's requestid for one step of a run: stable across retries, unique per step, 50 characters
    at most (hashed down, so any key length and alphabet fits)."""
    digest = hashlib.sha256(f"{idempotency_key}\x1f{step}".encode()).hexdigest()
    return f"bf-{digest[:MAX_REQUEST_ID - 3]}"


def clean_name(text: str, limit: int) -> str:
    """A QuickBooks name: no colon, tab or newline, trimmed to the field's limit."""
    cleaned = " ".join(text.replace(":", "-").split())
    return cleaned[:limit].strip()


def display_name(customer: CustomerInfo) -> str:
    return clean_name(customer.name, MAX_DISPLAY_NAME)


def _number(value: Decimal) -> int | float:
    """JSON numbers for amounts: exact for the few decimals of a currency."""
    return int(value) if value == value.to_integral_value() else float(value)


def _ref(value: str, name: str | None = None) -> dict[str, str]:
    return {"value": value, "name": name} if name else {"value": value}


def _line_amounts(line: LineItem, currency: str) -> tuple[Decimal, Decimal, Decimal]:
    """(quantity, unit price, amount); QuickBooks checks Amount = UnitPrice x Qty, rounded to the currency."""
    quantity = Decimal(str(line.quantity))
    unit_price = minor_to_decimal(line.unit_amount_minor, currency)
    step = Decimal(1).scaleb(-minor_unit_exponent(currency))
    amount = (quantity * unit_price).quantize(step, rounding=ROUND_HALF_UP)
    return quantity, unit_price, amount


# --- what a draft and a connection ask for, checked before any call ---------------------------------
@dataclass(frozen=True)
class _Plan:
    document_type: str
    entity: str
    realm_id: str
    base_url: str
    app_url: str
    minor_version: str
    matching: str
    create_products: bool
    income_account_id: str | None
    item_type: str
    default_item_id: str | None
    tax_codes_required: bool
    default_tax_code: str | None
    non_taxable_tax_code: str | None
    txn_date: date
    currency: str
    # From the company's preferences (read before any lookup): None until then, and in previews.
    home_currency: str | None = None
    multicurrency: bool = False
    exchange_rate: Decimal | None = None  # home-currency units per document-currency unit, when foreign

    @property
    def foreign(self) -> bool:
        return self.home_currency is not None and self.currency != self.home_currency

    @property
    def needs_customer(self) -> bool:
        return self.entity != "Purchase"

    @property
    def needs_items(self) -> bool:
        return self.entity != "Purchase"


def _option(draft: InvoiceDraft, connection: Connection, name: str) -> str | None:
    """A rule option, else the connection's setting of the same name; as text, None when empty."""
    value = draft.options.get(name)
    if value in (None, ""):
        value = connection.settings.get(name)
    if value in (None, ""):
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ConfigurationError(f"{TARGET} option {name} must be an id (text)")
    return str(value)


def _plan(draft: InvoiceDraft, connection: Connection) -> _Plan:
    entity = ENTITY_BY_TYPE.get(draft.document_type)
    if entity is None:
        raise ConfigurationError(
            f"{TARGET} creates {', '.join(sorted(ENTITY_BY_TYPE))}, not {draft.document_type!r}")
    region = str(connection.settings.get("region") or connection.settings.get("country") or "US").upper()
    tax_codes_required = (flag_setting(connection, "tax_codes_required")
                          if "tax_codes_required" in connection.settings else region in TAX_CODE_REGIONS)
    item_type = str(connection.settings.get("item_type") or "Service")
    if item_type not in ITEM_TYPES:
        raise ConfigurationError(f"connection {connection.name!r}: item_type must be one of "
                                 f"{', '.join(ITEM_TYPES)}")
    raw_date = draft.options.get("txn_date")
    try:
        txn_date = date.fromisoformat(str(raw_date)) if raw_date else datetime.now(UTC).date()
    except ValueError:
        raise ConfigurationError(f"{TARGET} option txn_date must be YYYY-MM-DD") from None
    plan = _Plan(
        document_type=draft.document_type,
        entity=entity,
        realm_id=str(connection.require("realm_id")),
        base_url=str(connection.settings.get("base_url") or DEFAULT_BASE_URL).rstrip("/"),
        app_url=str(connection.settings.get("app_url") or DEFAULT_APP_URL).rstrip("/"),
        minor_version=str(connection.settings.get("minor_version") or DEFAULT_MINOR_VERSION),
        matching=customer_matching_mode(connection),
        create_products=flag_setting(connection, "create_products"),
        income_account_id=_option(draft, connection, "income_account_id"),
        item_type=item_type,
        default_item_id=_option(draft, connection, "item_id") or _option(draft, connection, "default_item_id"),
        tax_codes_required=tax_codes_required,
        default_tax_code=_option(draft, connection, "tax_code") or _option(draft, connection, "default_tax_code"),
        non_taxable_tax_code=_option(draft, connection, "non_taxable_tax_code"),
        txn_date=txn_date,
        currency=draft.currency.upper(),
    )
    _check(plan, draft, connection)
    return plan


def _check(plan: _Plan, draft: InvoiceDraft, connection: Connection) -> None:
    """Refuse now what QuickBooks would refuse half way, after a customer or item was created."""
    if plan.document_type == "paid_invoice":
        taxable = [str(i + 1) for i, line in enumerate(draft.lines) if line.taxable]
        if taxable:
            raise TargetRejected(
                f"{DISPLAY} paid invoices can only be created for non-taxable lines; line(s) "
                f"{', '.join(taxable)} are taxable (create an invoice or a sales receipt instead)")
    if plan.tax_codes_required and not plan.default_tax_code:
        raise TargetRejected(
            f"{DISPLAY} needs a tax code on every line for this company's region, and connection "
            f"{connection.name!r} has none: set default_tax_code to the id of a TaxCode (e.g. your 20% VAT "
            f"code), or tax_codes_required to false if the company does not charge VAT/GST")
    untaxed = [str(i + 1) for i, line in enumerate(draft.lines) if line.taxable is False]
    if plan.tax_codes_required and untaxed and not plan.non_taxable_tax_code:
        raise TargetRejected(
            f"{DISPLAY} would charge VAT on line(s) {', '.join(untaxed)}, which are marked not taxable: in a VAT/GST "
            f"company every line carries a tax code, and connection {connection.name!r} has no "
            "non_taxable_tax_code (the id of the company's zero-rated, exempt or no-VAT TaxCode); nothing was "
            "created")
    if plan.entity == "RefundReceipt" and not (
        _option(draft, connection, "refund_account_id") or _option(draft, connection, "deposit_account_id")
    ):
        raise ConfigurationError(f"connection {connection.name!r}: a refund receipt needs refund_account_id "
                                 "(the account the refund is paid from)")
    if plan.entity == "Purchase":
        for name in ("expense_account_id", "payment_account_id"):
            if not _option(draft, connection, name):
                raise ConfigurationError(f"connection {connection.name!r}: an expense needs {name}")
        payment_type = _option(draft, connection, "payment_type") or "Cash"
        if payment_type not in PAYMENT_TYPES:
            raise ConfigurationError(f"{TARGET} payment_type must be one of {', '.join(PAYMENT_TYPES)}")
    doc_number = draft.options.get("doc_number")
    if doc_number is not None and len(str(doc_number)) > MAX_DOC_NUMBER:
        raise TargetRejected(f"{DISPLAY} document numbers have at most {MAX_DOC_NUMBER} characters")
    if plan.entity == "Estimate" and draft.options.get("expiration_days") is not None:
        _int_option(draft, "expiration_days")
    for line in draft.lines:
        if Decimal(str(line.quantity)) <= 0 and plan.entity != "Purchase":
            raise TargetRejected(f"{DISPLAY} line quantities must be positive: {line.description!r}")


def _int_option(draft: InvoiceDraft, name: str) -> int:
    value = draft.options.get(name)
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).lstrip("-").isdigit():
        raise ConfigurationError(f"{TARGET} option {name} must be a whole number")
    return int(value)


# --- the company's currencies, read before any lookup ------------------------------------------------
@dataclass(frozen=True)
class CompanyCurrency:
    """CurrencyPrefs from GET /preferences. Finance.xsd: MultiCurrencyEnabled, "Multicurrency enabled for
    this company"; HomeCurrency, "Reference to the Home currency of the company"."""

    multicurrency: bool
    home_currency: str


def company_currency(preferences: dict[str, Any]) -> CompanyCurrency:
    prefs = preferences.get("CurrencyPrefs") or {}
    home = (prefs.get("HomeCurrency") or {}).get("value") if isinstance(prefs, dict) else None
    if not home:
        raise TargetRejected(f"{DISPLAY} preferences name no home currency (CurrencyPrefs.HomeCurrency)")
    return CompanyCurrency(prefs.get("MultiCurrencyEnabled") is True, str(home).upper())


def with_company_currency(plan: _Plan, draft: InvoiceDraft, company: CompanyCurrency) -> _Plan:
    """The plan in the company's currencies; a currency the company cannot bill in is refused here, before
    any customer or item is looked up or created."""
    if plan.currency != company.home_currency and not company.multicurrency:
        raise TargetRejected(
            f"{DISPLAY} company {plan.realm_id} bills only in its home currency {company.home_currency} "
            f"(multicurrency is off) and this {plan.document_type} is in {plan.currency}: turn multicurrency "
            f"on in QuickBooks or bill in {company.home_currency}; nothing was created", home_currency=
            company.home_currency, currency=plan.currency)
    rate = _exchange_rate_option(draft) if plan.currency != company.home_currency else None
    return replace(plan, home_currency=company.home_currency, multicurrency=company.multicurrency,
                   exchange_rate=rate)


def _exchange_rate_option(draft: InvoiceDraft) -> Decimal | None:
    """The rule's exchange_rate (home-currency units for one unit of the document's currency), if set."""
    return exchange_rate(draft.options.get("exchange_rate"), option=f"{TARGET} option exchange_rate")


def check_customer_currency(plan: _Plan, customer: dict[str, Any]) -> None:
    """A matched customer bills in one currency (Finance.xsd, Customer.CurrencyRef: "the currency code for
    all the business transactions created for or received from the customer"); no CurrencyRef is the home
    currency."""
    currency = str((customer.get("CurrencyRef") or {}).get("value") or plan.home_currency or "").upper()
    if currency and currency != plan.currency:
        raise TargetRejected(
            f"{DISPLAY} customer {customer.get('DisplayName')!r} (Id {customer.get('Id')}) bills in {currency} "
            f"and this {plan.document_type} is in {plan.currency}; QuickBooks keeps one currency per customer, "
            "so nothing was created (bill in the customer's currency, or store another customer's id on the "
            "CRM record)", customer_id=customer.get("Id"), customer_currency=currency, currency=plan.currency)


def _currency_fields(body: dict[str, Any], plan: _Plan) -> None:
    """CurrencyRef, and ExchangeRate when the document is not in the home currency (Finance.xsd: "the
    number of home currency units it takes to equal one foreign currency unit")."""
    body["CurrencyRef"] = _ref(plan.currency)
    if plan.foreign and plan.exchange_rate is not None:
        body["ExchangeRate"] = _number(plan.exchange_rate)


# --- the request bodies, built once for sending and previewing --------------------------------------
def customer_body(customer: CustomerInfo, plan: _Plan | None = None) -> dict[str, Any]:
    """The new customer, in the document's currency when the company has multicurrency (without it every
    customer is in the home currency, which QuickBooks sets itself)."""
    body: dict[str, Any] = {"DisplayName": display_name(customer),
                            "CompanyName": clean_name(customer.name, MAX_NAME_PART)}
    if plan is not None and plan.multicurrency:
        body["CurrencyRef"] = _ref(plan.currency)
    if customer.first_name and customer.first_name.strip():
        body["GivenName"] = clean_name(customer.first_name, MAX_NAME_PART)
    if customer.last_name and customer.last_name.strip():
        body["FamilyName"] = clean_name(customer.last_name, MAX_NAME_PART)
    if customer.email:
        body["PrimaryEmailAddr"] = {"Address": customer.email.strip()}
    address = customer.address
    bill_addr = {key: value for key, value in {
        "Line1": address.line1, "Line2": address.line2, "City": address.city,
        "CountrySubDivisionCode": address.state, "PostalCode": address.postal_code, "Country": address.country,
    }.items() if value}
    if bill_addr:
        body["BillAddr"] = bill_addr
    if customer.crm_company_id:
        body["Notes"] = f"CRM company {customer.crm_company_id}"
    return body


def item_body(plan: _Plan, product: ProductToCreate) -> dict[str, Any]:
    _, unit_price, _ = _line_amounts(product.line, plan.currency)
    body: dict[str, Any] = {
        "Name": clean_name(product.name, MAX_ITEM_NAME),
        "Type": plan.item_type,
        "IncomeAccountRef": _ref(str(plan.income_account_id)),
        "UnitPrice": _number(unit_price),
        "Description": product.line.description[:MAX_DESCRIPTION],
    }
    if product.sku:
        body["Sku"] = product.sku[:MAX_SKU]
    if not plan.tax_codes_required:
        body["Taxable"] = bool(product.line.taxable)  # US: whether sales tax applies by default
    return body


def _tax_code(plan: _Plan, line: LineItem) -> str:
    if plan.tax_codes_required:
        if not line.taxable and plan.non_taxable_tax_code:
            return plan.non_taxable_tax_code
        return str(plan.default_tax_code)
    return US_TAXABLE if line.taxable else US_NON_TAXABLE


def sales_line(plan: _Plan, line: LineItem, item_ref: dict[str, str]) -> dict[str, Any]:
    quantity, unit_price, amount = _line_amounts(line, plan.currency)
    return {
        "DetailType": "SalesItemLineDetail",
        "Amount": _number(amount),
        "Description": line.description[:MAX_DESCRIPTION],
        "SalesItemLineDetail": {
            "ItemRef": item_ref,
            "Qty": _number(quantity),
            "UnitPrice": _number(unit_price),
            "TaxCodeRef": _ref(_tax_code(plan, line)),
        },
    }


def _discount(line: LineItem, currency: str) -> Decimal:
    return minor_to_decimal(line.discount_minor(), currency)


def discount_line(plan: _Plan, draft: InvoiceDraft) -> dict[str, Any] | None:
    """The lines' discounts as one DiscountLineDetail line after them (None without discounts).

    A discount line (DiscountLineDetail, a positive Amount taken off the lines above it) is how QuickBooks
    Online's Invoice, Estimate and receipts carry discounts; SalesItemLineDetail's DiscountRate/DiscountAmt
    are regional fields billflow does not rely on. The Description says which line each part belongs to;
    QuickBooks spreads the discount over the lines' tax like any document discount.
    """
    parts = []
    total = Decimal(0)
    for number, line in enumerate(draft.lines, start=1):
        off = _discount(line, plan.currency)
        if off > 0:
            total += off
            how = f"{line.discount_percent.normalize():f}%" if line.discount_percent else f"{off:f}"
            parts.append(f"line {number} ({line.description[:40]}): {how}")
    if total <= 0:
        return None
    return {
        "DetailType": "DiscountLineDetail",
        "Amount": _number(total),
        "Description": ("Discounts: " + "; ".join(parts))[:MAX_DESCRIPTION],
        "DiscountLineDetail": {"PercentBased": False},
    }


def document_body(
    plan: _Plan, draft: InvoiceDraft, connection: Connection, customer_id: str, item_refs: list[dict[str, str]]
) -> dict[str, Any]:
    """The Invoice, Estimate, SalesReceipt or RefundReceipt (Purchase: purchase_body)."""
    lines = [sales_line(plan, line, ref) for line, ref in zip(draft.lines, item_refs, strict=True)]
    discount = discount_line(plan, draft)
    body: dict[str, Any] = {
        "CustomerRef": _ref(customer_id),
        "TxnDate": plan.txn_date.isoformat(),
        "Line": [*lines, discount] if discount else lines,
    }
    _currency_fields(body, plan)
    _common_fields(body, plan, draft)
    if draft.memo:
        body["CustomerMemo"] = {"value": draft.memo[:MAX_CUSTOMER_MEMO]}
    if draft.customer.email:
        body["BillEmail"] = {"Address": draft.customer.email.strip()}
    if plan.entity == "Invoice":
        term = _option(draft, connection, "sales_term_id")
        if term:
            body["SalesTermRef"] = _ref(term)
        if draft.days_until_due is not None:
            body["DueDate"] = (plan.txn_date + timedelta(days=draft.days_until_due)).isoformat()
    elif plan.entity == "Estimate" and draft.options.get("expiration_days") is not None:
        days = _int_option(draft, "expiration_days")
        body["ExpirationDate"] = (plan.txn_date + timedelta(days=days)).isoformat()
    elif plan.entity in ("SalesReceipt", "RefundReceipt"):
        account = (_option(draft, connection, "refund_account_id") if plan.entity == "RefundReceipt" else None) \
            or _option(draft, connection, "deposit_account_id")
        if account:
            body["DepositToAccountRef"] = _ref(account)
        method = _option(draft, connection, "payment_method_id")
        if method:
            body["PaymentMethodRef"] = _ref(method)
    return body


def _common_fields(body: dict[str, Any], plan: _Plan, draft: InvoiceDraft) -> None:
    if draft.options.get("doc_number") is not None:
        body["DocNumber"] = str(draft.options["doc_number"])
    note = "\n".join(part for part in (
        draft.reference, *(f"{k}: {v}" for k, v in sorted(draft.metadata.items()))) if part)
    if note:
        body["PrivateNote"] = note[:MAX_PRIVATE_NOTE]
    if plan.tax_codes_required:
        body["GlobalTaxCalculation"] = ("TaxInclusive" if draft.options.get("amounts_include_tax")
                                        else "TaxExcluded")


def purchase_body(plan: _Plan, draft: InvoiceDraft, connection: Connection) -> dict[str, Any]:
    expense_account = str(_option(draft, connection, "expense_account_id"))
    lines = []
    for line in draft.lines:
        _, _, amount = _line_amounts(line, plan.currency)
        amount -= _discount(line, plan.currency)  # an expense line is its net amount: no discount lines there
        detail: dict[str, Any] = {"AccountRef": _ref(expense_account)}
        if plan.tax_codes_required:
            detail["TaxCodeRef"] = _ref(_tax_code(plan, line))
        lines.append({"DetailType": "AccountBasedExpenseLineDetail", "Amount": _number(amount),
                      "Description": line.description[:MAX_DESCRIPTION],
                      "AccountBasedExpenseLineDetail": detail})
    body: dict[str, Any] = {
        "AccountRef": _ref(str(_option(draft, connection, "payment_account_id"))),
        "PaymentType": _option(draft, connection, "payment_type") or "Cash",
        "TxnDate": plan.txn_date.isoformat(),
        "Line": lines,
    }
    vendor = _option(draft, connection, "vendor_id")
    if vendor:
        body["EntityRef"] = {"value": vendor, "type": "Vendor"}
    method = _option(draft, connection, "payment_method_id")
    if method:
        body["PaymentMethodRef"] = _ref(method)
    _currency_fields(body, plan)
    _common_fields(body, plan, draft)
    return body


def payment_body(
    plan: _Plan, draft: InvoiceDraft, connection: Connection, customer_id: str, invoice_id: str, total: Decimal
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "CustomerRef": _ref(customer_id),
        "TotalAmt": _number(total),
        "TxnDate": plan.txn_date.isoformat(),
        "Line": [{"Amount": _number(total), "LinkedTxn": [{"TxnId": invoice_id, "TxnType": "Invoice"}]}],
    }
    _currency_fields(body, plan)
    account = _option(draft, connection, "deposit_account_id")
    if account:
        body["DepositToAccountRef"] = _ref(account)
    method = _option(draft, connection, "payment_method_id")
    if method:
        body["PaymentMethodRef"] = _ref(method)
    if draft.reference:
        body["PrivateNote"] = draft.reference[:MAX_PRIVATE_NOTE]
    return body


def _planned_total(plan: _Plan, draft: InvoiceDraft) -> Decimal:
    return sum((_line_amounts(line, plan.currency)[2] - _discount(line, plan.currency) for line in draft.lines),
               Decimal(0))


def customer_query(criterion: CustomerCriterion) -> str | None:
    """The query for a lookup (None for the id, which is read directly)."""
    if criterion.field == "email":
        where = f"PrimaryEmailAddr = {query_literal(criterion.value)}"
    elif criterion.field == "person_name":
        first, last = criterion.values
        where = (f"GivenName = {query_literal(clean_name(first, MAX_NAME_PART))} "
                 f"and FamilyName = {query_literal(clean_name(last, MAX_NAME_PART))}")
    elif criterion.field == "name":
        where = f"DisplayName = {query_literal(clean_name(criterion.value, MAX_DISPLAY_NAME))}"
    else:
        return None
    return f"select * from Customer where {where} maxresults 10"  # noqa: S608 (values via query_literal)


def item_query(criterion: ProductCriterion) -> str:
    field = "Sku" if criterion.field == "sku" else "Name"
    value = criterion.value if criterion.field == "sku" else clean_name(criterion.value, MAX_ITEM_NAME)
    return f"select * from Item where {field} = {query_literal(value)} maxresults 10"  # noqa: S608


# --- the API client --------------------------------------------------------------------------------
class _QuickBooksApi:
    def __init__(self, connection: Connection, plan: _Plan | None = None) -> None:
        self.plan = plan
        self.session = OAuthSession(connection, token_url=TOKEN_URL)
        self.realm_id = str(connection.require("realm_id"))
        base_url = str(connection.settings.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        self.company_url = f"{base_url}/v3/company/{quote(self.realm_id, safe='')}"
        self.minor_version = str(connection.settings.get("minor_version") or DEFAULT_MINOR_VERSION)

    def url(self, path: str, **params: str) -> str:
        return f"{self.company_url}/{path}?" + urlencode({**params, "minorversion": self.minor_version})

    def read(self, entity: str, entity_id: str) -> dict[str, Any] | None:
        """The entity with that id, or None when QuickBooks says there is none."""
        answer = self._call("GET", self.url(f"{entity.lower()}/{quote(entity_id, safe='')}"))
        if answer.status == 404 or (answer.status == 400 and OBJECT_NOT_FOUND in _fault_codes(answer)):
            return None
        _raise_for(answer)
        found = _json(answer).get(entity)
        return found if isinstance(found, dict) else None

    def company_currency(self) -> CompanyCurrency:
        """GET /preferences: whether the company has multicurrency, and its home currency."""
        answer = self._call("GET", self.url("preferences"))
        _raise_for(answer)
        preferences = _json(answer).get("Preferences")
        return company_currency(preferences if isinstance(preferences, dict) else {})

    def exchange_rate(self, currency: str, as_of: date) -> Decimal:
        """QuickBooks' own rate for the date (GET /exchangerate?sourcecurrencycode=&asofdate=): the rate the
        company would use when an invoice is entered in QuickBooks itself."""
        answer = self._call("GET", self.url("exchangerate", sourcecurrencycode=currency,
                                            asofdate=as_of.isoformat()))
        missing = answer.status == 400 and OBJECT_NOT_FOUND in _fault_codes(answer)
        if not missing:
            _raise_for(answer)
        found = {} if missing else _json(answer).get("ExchangeRate") or {}
        try:
            rate = Decimal(str(found.get("Rate"))) if isinstance(found, dict) else Decimal(0)
        except InvalidOperation:
            rate = Decimal(0)
        if not rate.is_finite() or rate <= 0:
            home = self.plan.home_currency if self.plan else "the home currency"
            raise TargetRejected(
                f"{DISPLAY} has no exchange rate from {currency} to {home} on {as_of}: set "
                "the rate in QuickBooks, or the rule's exchange_rate option; nothing was created")
        return rate

    def query(self, entity: str, statement: str) -> list[dict[str, Any]]:
        answer = self._call("GET", self.url("query", query=statement))
        _raise_for(answer)
        found = (_json(answer).get("QueryResponse") or {}).get(entity) or []
        return [entry for entry in found if isinstance(entry, dict)]

    def create(self, entity: str, body: dict[str, Any], requestid: str) -> dict[str, Any]:
        payload = json.dumps(body, separators=(",", ":")).encode()
        answer = self._call("POST", self.url(entity.lower(), requestid=requestid), payload)
        _raise_for(answer)
        created = _json(answer).get(entity)
        if not isinstance(created, dict) or not created.get("Id"):
            raise TargetRejected(f"{DISPLAY} answered {answer.status} without the created {entity}")
        return created

    def _call(self, method: str, url: str, body: bytes | None = None) -> http.HttpResponse:
        headers = {"Accept": "application/json", "User-Agent": "billflow"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        return self.session.request(method, url, headers=headers, body=body, target=TARGET,
                                    raise_for_status=False)

    # --- lookups ---------------------------------------------------------------------------------
    def find_customer(self, criterion: CustomerCriterion) -> dict[str, Any] | None:
        if criterion.field == "id":
            if not criterion.value.isdigit():
                return None  # QuickBooks ids are numbers: this one belongs to another system
            found = self.read("Customer", criterion.value)
            return found if found and found.get("Active", True) is not False else None
        statement = customer_query(criterion)
        hits = self.query("Customer", statement) if statement else []
        active = [c for c in hits if c.get("Active", True) is not False]
        return single_match(active, criterion, target=DISPLAY,
                            describe=lambda c: f"Id {c.get('Id')} {c.get('DisplayName')!r}")

    def find_item(self, criterion: ProductCriterion) -> dict[str, Any] | None:
        hits = self.query("Item", item_query(criterion))
        # a Category groups products and cannot be sold on a line
        return next((i for i in hits if i.get("Type") != "Category" and i.get("Active", True) is not False),
                    None)


def _json(answer: http.HttpResponse) -> dict[str, Any]:
    try:
        doc = answer.json()
    except ValueError:
        raise TargetRejected(f"{DISPLAY} answered {answer.status} with a body that is not JSON") from None
    if not isinstance(doc, dict):
        raise TargetRejected(f"{DISPLAY} answered {answer.status} without a JSON object")
    return doc


def _fault_errors(answer: http.HttpResponse) -> tuple[str | None, list[dict[str, Any]]]:
    """Intuit's Fault: {"Fault": {"Error": [{"Message", "Detail", "code"}], "type"}} (401s spell it in
    lower case: {"fault": {"error": [{"message", "detail", "code"}]}})."""
    try:
        doc = answer.json()
    except ValueError:
        return None, []
    if not isinstance(doc, dict):
        return None, []
    fault = doc.get("Fault") or doc.get("fault")
    if not isinstance(fault, dict):
        return None, []
    errors = fault.get("Error") or fault.get("error") or []
    kind = fault.get("type")
    return (kind if isinstance(kind, str) else None), [e for e in errors if isinstance(e, dict)]


def _fault_codes(answer: http.HttpResponse) -> list[str]:
    return [str(e.get("code")) for e in _fault_errors(answer)[1]]


def fault_message(answer: http.HttpResponse) -> str:
    kind, errors = _fault_errors(answer)
    parts = []
    for error in errors:
        message = error.get("Message") or error.get("message") or ""
        detail = error.get("Detail") or error.get("detail") or ""
        code = error.get("code")
        text = message if not detail or detail == message else f"{message}: {detail}"
        parts.append(f"{text} (code {code})" if code else text)
    if not parts:
        return http.error_message(answer)
    return (f"{kind}: " if kind else "") + "; ".join(parts)


def _raise_for(answer: http.HttpResponse) -> None:
    if answer.status < 400:
        return
    message = fault_message(answer)
    if answer.status == 429 or answer.status >= 500:
        raise TransientError(f"{DISPLAY} answered {answer.status}: {message}",
                             retry_after_seconds=http.retry_after(answer.headers), status=answer.status)
    raise TargetRejected(f"{DISPLAY} refused the request ({answer.status}): {message}", status=answer.status,
                         codes=_fault_codes(answer))


# --- the connector ---------------------------------------------------------------------------------
@dataclass
class _Resolved:
    """Everything looked up before the first create."""

    customer: CustomerMatch[dict[str, Any]] | None
    products: list[ProductMatch[dict[str, Any]]]
    to_create: list[ProductToCreate]


class QuickBooksConnector(Connector):
    kind = "quickbooks"
    document_types = frozenset(ENTITY_BY_TYPE)

    def create_document(
        self, draft: InvoiceDraft, connection: Connection, context: SendContext
    ) -> DispatchResult:
        plan = _plan(draft, connection)
        api = _QuickBooksApi(connection, plan)
        plan = api.plan = with_company_currency(plan, draft, api.company_currency())
        if plan.foreign and plan.exchange_rate is None:
            plan = api.plan = replace(plan, exchange_rate=api.exchange_rate(plan.currency, plan.txn_date))
        resolved = self._resolve(api, plan, draft)

        def rid(step: str) -> str:
            return request_id(context.idempotency_key, step)

        details: dict[str, Any] = {"entity": plan.entity, "realm_id": plan.realm_id}
        if plan.entity == "Purchase":
            document = api.create("Purchase", purchase_body(plan, draft, connection), rid("document"))
            details["customer_id"] = None
        else:
            assert resolved.customer is not None
            customer, created = resolved.customer.found, False
            if customer is None:
                customer = api.create("Customer", customer_body(draft.customer, plan), rid("customer"))
                created = True
            customer_id = str(customer["Id"])
            item_refs, items_created = self._item_refs(api, plan, resolved, rid)
            body = document_body(plan, draft, connection, customer_id, item_refs)
            document = api.create(plan.entity, body, rid("document"))
            details.update(customer_id=customer_id, customer_created=created, items_created=items_created)
            if plan.document_type == "paid_invoice":
                total = Decimal(str(document.get("TotalAmt", _planned_total(plan, draft))))
                payment = api.create("Payment", payment_body(plan, draft, connection, customer_id,
                                                             str(document["Id"]), total), rid("payment"))
                details["payment_id"] = str(payment["Id"])
        document_id = str(document["Id"])
        details.update(doc_number=document.get("DocNumber"), total=document.get("TotalAmt"))
        return DispatchResult(
            external_id=document_id,
            external_url=f"{plan.app_url}/app/{APP_PAGES[plan.entity]}?txnId={quote(document_id, safe='')}",
            details=details,
        )

    def preview_document(
        self, draft: InvoiceDraft, connection: Connection, context: SendContext
    ) -> list[dict[str, Any]]:
        """The requests create_document would make, in order; nothing is sent.

        Ids QuickBooks has not given yet are {customer.Id}, {item:N.Id} (N: the line's number) and
        {document.Id}; steps that depend on what a lookup finds say so in "when".
        """
        plan = _plan(draft, connection)
        company_url = f"{plan.base_url}/v3/company/{quote(plan.realm_id, safe='')}"
        steps: list[dict[str, Any]] = []

        def url(path: str, **params: str) -> str:
            return f"{company_url}/{path}?" + urlencode({**params, "minorversion": plan.minor_version})

        def lookup(step: str, path: str, when: str | None = None, **params: str) -> None:
            steps.append({"step": step, "method": "GET", "url": url(path, **params), **params,
                          **({"when": when} if when else {})})

        def create(step: str, entity: str, body: dict[str, Any], when: str | None = None) -> None:
            requestid = request_id(context.idempotency_key, step)
            steps.append({"step": step, "method": "POST", "url": url(entity.lower(), requestid=requestid),
                          "entity": entity, "json": body, "requestid": requestid,
                          **({"when": when} if when else {})})

        lookup("read_preferences", "preferences")
        if _exchange_rate_option(draft) is None:
            lookup("read_exchange_rate", "exchangerate", "the currency is not the company's home currency",
                   sourcecurrencycode=plan.currency, asofdate=plan.txn_date.isoformat())
        if plan.entity == "Purchase":
            create("document", "Purchase", purchase_body(plan, draft, connection))
            return steps
        for index, criterion in enumerate(customer_criteria(draft.customer)):
            when = "no customer found yet" if index else None
            statement = customer_query(criterion)
            if statement is None:
                if criterion.value.isdigit():
                    lookup("find_customer_by_id", f"customer/{quote(criterion.value, safe='')}", when)
            else:
                lookup(f"find_customer_by_{criterion.field}", "query", when, query=statement)
        item_refs: list[dict[str, str]] = []
        for index, line in enumerate(draft.lines):
            if plan.default_item_id and not (line.sku or line.product_name):
                item_refs.append(_ref(plan.default_item_id))
                continue
            for number, product_criterion in enumerate(product_criteria(line)):
                lookup(f"find_item:{index + 1}_by_{product_criterion.field}", "query",
                       "no item found yet for this line" if number else None,
                       query=item_query(product_criterion))
            item_refs.append(_ref(f"{{item:{index + 1}.Id}}"))
        if plan.matching == STRICT:
            steps.append({"step": "fail", "when": "no customer found", "error": "CustomerNotFound"})
        else:
            create("customer", "Customer", customer_body(draft.customer), when="no customer found")
        if plan.create_products:
            pending = [ProductMatch[dict[str, Any]](i, line, None) for i, line in enumerate(draft.lines)
                       if not (plan.default_item_id and not (line.sku or line.product_name))]
            for product in products_to_create(pending):
                if plan.income_account_id:
                    create(_item_step(product), "Item", item_body(plan, product), when="no item found")
                else:
                    steps.append({"step": _item_step(product), "when": "no item found",
                                  "error": "ConfigurationError: income_account_id is needed to create items"})
        else:
            steps.append({"step": "fail", "when": "any line matches no item", "error": "ProductNotFound"})
        create("document", plan.entity, document_body(plan, draft, connection, CUSTOMER_ID, item_refs))
        if plan.document_type == "paid_invoice":
            create("payment", "Payment", payment_body(plan, draft, connection, CUSTOMER_ID, DOCUMENT_ID,
                                                      _planned_total(plan, draft)))
        return steps

    def test_connection(self, connection: Connection, tenant: str) -> ConnectionReport:
        """GET companyinfo/{realm} (the company's name and country) and GET preferences (multicurrency and
        home currency); the token is refreshed first when needed, as for a send."""
        api = _QuickBooksApi(connection)
        info = api.read("CompanyInfo", api.realm_id) or {}
        company = api.company_currency()
        region = str(connection.settings.get("region") or connection.settings.get("country")
                     or info.get("Country") or "US").upper()
        vat = region in TAX_CODE_REGIONS
        notes = [] if company.multicurrency else [
            f"multicurrency is off: only {company.home_currency} documents can be created"]
        if vat and not connection.settings.get("default_tax_code"):
            notes.append("a VAT/GST company: set default_tax_code (and non_taxable_tax_code) before the first deal")
        return ConnectionReport(
            connection=connection.name, kind=self.kind,
            checked=f"GET /v3/company/{api.realm_id}/companyinfo/{api.realm_id}, GET preferences",
            account_name=info.get("CompanyName") or info.get("LegalName"), account_id=api.realm_id,
            currency=company.home_currency, multicurrency=company.multicurrency,
            tax_regime=f"VAT/GST ({region}): a TaxCode on every line" if vat else f"sales tax ({region}): TAX or NON",
            # Intuit grants com.intuit.quickbooks.accounting as a whole: reading works, so creating does.
            can_create=dict.fromkeys(sorted(ENTITY_BY_TYPE), True), notes=notes)

    # --- resolving before creating -------------------------------------------------------------------
    @staticmethod
    def _resolve(api: _QuickBooksApi, plan: _Plan, draft: InvoiceDraft) -> _Resolved:
        if not plan.needs_customer:
            return _Resolved(None, [], [])
        customer = find_customer(draft.customer, api.find_customer)
        require_customer(customer, mode=plan.matching, target=DISPLAY)
        if customer.found is not None:
            check_customer_currency(plan, customer.found)
        preset = {}
        if plan.default_item_id:
            preset = {i: {"Id": plan.default_item_id} for i, line in enumerate(draft.lines)
                      if not (line.sku or line.product_name)}
        products = match_products(draft.lines, api.find_item, create_missing=plan.create_products,
                                  target=DISPLAY, preset=preset)
        to_create = products_to_create(products)
        if to_create and not plan.income_account_id:
            raise ConfigurationError(
                f"{DISPLAY} items can only be created with an income account: set income_account_id "
                f"({len(to_create)} product(s) to create, nothing was created)")
        return _Resolved(customer, products, to_create)

    @staticmethod
    def _item_refs(
        api: _QuickBooksApi, plan: _Plan, resolved: _Resolved, rid: Callable[[str], str]
    ) -> tuple[list[dict[str, str]], list[str]]:
        """The ItemRef of every line (creating the missing items) and the ids of the created ones."""
        refs: list[dict[str, str]] = []
        for match in resolved.products:
            found = match.found
            refs.append(_ref(str(found["Id"]), found.get("Name")) if found else {})
        created_ids: list[str] = []
        for product in resolved.to_create:
            created = api.create("Item", item_body(plan, product), rid(_item_step(product)))
            created_ids.append(str(created["Id"]))
            for index in product.line_indexes:
                refs[index] = _ref(str(created["Id"]), created.get("Name"))
        return refs, created_ids


def _item_step(product: ProductToCreate) -> str:
    return f"item:{product.sku or ''}:{product.name}"
