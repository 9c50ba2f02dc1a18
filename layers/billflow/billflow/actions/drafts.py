"""From a CRM record and its lookup to a target-neutral InvoiceDraft.

The lines are the looked-up line items when the CRM has any (lookup["line_items"], the shape every CRM
connector answers, see line_items_from_lookup), else one line of the record's amount named after the deal.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from billflow.countries import country_code
from billflow.errors import ConfigurationError
from billflow.models.documents import Address, CustomerInfo, InvoiceDraft, LineItem
from billflow.models.rules import Action
from billflow.money import micros_to_minor, minor_unit_exponent, round_logged
from billflow.rules.templates import render

# Options a rule may give a document action; the rest go to the connector untouched.
_MAPPING_OPTIONS = {"description", "currency", "customer_id_field", "days_until_due", "memo", "reference",
                    "require_line_items"}
# A line item as every CRM connector's lookup answers it (agreed between the Twenty and HubSpot connectors):
# quantity, unit_price (major units), discount_percent and discount_amount (major units, the whole line's)
# are decimal strings; currency an ISO code or None (the document's).
LINE_ITEM_KEYS = ("name", "sku", "quantity", "unit_price", "currency", "discount_percent", "discount_amount",
                  "taxable", "description", "term")


def draft_for(action: Action, record: dict[str, Any], context: dict[str, Any], source: str) -> InvoiceDraft:
    options = render(action.options, context)
    company = _mapping(context.get("company"))
    contact = _mapping(context.get("contact"))
    amount = _mapping(record.get("amount"))
    currency = str(options.get("currency") or amount.get("currencyCode") or "").lower()
    if not currency:
        raise ConfigurationError("no currency: the record has no amount.currencyCode and the rule sets none")
    lines = _lines(record, context, options, currency, amount)
    name = company.get("name") or record.get("name")
    if not name:
        raise ConfigurationError("the customer has no name: neither the company nor the record has one")
    customer_id_field = options.get("customer_id_field")
    person_name = _mapping(contact.get("name"))
    emails = _mapping(contact.get("emails"))
    address = _mapping(company.get("address"))
    customer = CustomerInfo(
        external_id=(company.get(customer_id_field) or None) if customer_id_field else None,
        name=str(name),
        email=emails.get("primaryEmail") or None,
        first_name=person_name.get("firstName") or None,
        last_name=person_name.get("lastName") or None,
        address=Address(
            line1=address.get("addressStreet1") or None,
            line2=address.get("addressStreet2") or None,
            city=address.get("addressCity") or None,
            state=address.get("addressState") or None,
            postal_code=address.get("addressPostcode") or None,
            country=country_code(address.get("addressCountry")),
        ),
        tax_id=company.get("taxId") or None,
        crm_company_id=company.get("id") or record.get("companyId"),
    )
    return InvoiceDraft(
        document_type=action.type,
        customer=customer,
        currency=currency,
        lines=lines,
        days_until_due=int(options.get("days_until_due", 30)),
        memo=options.get("memo"),
        reference=options.get("reference") or record.get("name"),
        metadata={
            "crm": source,
            "crm_record_id": str(record.get("id", "")),
            "crm_company_id": str(customer.crm_company_id or ""),
        },
        options={k: v for k, v in options.items() if k not in _MAPPING_OPTIONS},
    )


def _lines(
    record: dict[str, Any], context: dict[str, Any], options: dict[str, Any], currency: str,
    amount: dict[str, Any],
) -> list[LineItem]:
    items = context.get("line_items")
    if isinstance(items, list) and items:
        return line_items_from_lookup(items, currency)
    if options.get("require_line_items") is True:
        # The run decides this after Lookup (not_matched); a draft without them must never fall back.
        raise ConfigurationError("the record has no line items and the action requires them (require_line_items)")
    micros = amount.get("amountMicros")
    if micros in (None, ""):
        raise ConfigurationError("the record has no amount.amountMicros to invoice")
    description = options.get("description") or record.get("name") or "Services"
    return [LineItem(description=str(description), unit_amount_minor=micros_to_minor(micros, currency))]


def line_items_from_lookup(items: list[Any], currency: str) -> list[LineItem]:
    """The document's lines from the lookup's line items, in their order."""
    return [_line(item, index, currency) for index, item in enumerate(items, start=1)]


def _line(item: Any, number: int, currency: str) -> LineItem:
    if not isinstance(item, dict):
        raise ConfigurationError(f"line item {number} is not an object")
    if "unit_amount_minor" in item:
        return LineItem.model_validate(item)  # already a draft line (a dry run's given lookup, say)
    name = str(item.get("name") or "").strip()
    description = str(item.get("description") or "").strip()
    if not name and not description:
        raise ConfigurationError(f"line item {number} has neither a name nor a description")
    own = str(item.get("currency") or "").strip().lower()
    if own and own != currency:
        raise ConfigurationError(f"line item {number} ({name or description!r}) is priced in {own.upper()}, the "
                                 f"document in {currency.upper()}: one document has one currency")
    quantity = _decimal(item.get("quantity", "1"), number, "quantity")
    unit_price = _decimal(item.get("unit_price"), number, "unit_price")
    exponent = minor_unit_exponent(currency)
    what = f"the unit price of line item {number} in {currency.upper()}"
    unit_minor = int(round_logged(unit_price, exponent, what=what).scaleb(exponent))
    percent = item.get("discount_percent")
    amount = item.get("discount_amount")
    discount_percent = _decimal(percent, number, "discount_percent") if percent not in (None, "") else None
    discount_minor = None
    if amount not in (None, ""):
        off = _decimal(amount, number, "discount_amount")
        discount_minor = int(round_logged(off, exponent, what=f"the discount of line item {number}").scaleb(exponent))
    if discount_percent == 0:
        discount_percent = None
    if discount_minor == 0:
        discount_minor = None
    taxable = item.get("taxable")
    try:
        return LineItem(
            description=description or name, product_name=name or None, sku=(str(item.get("sku") or "").strip()
                                                                              or None),
            quantity=float(quantity), unit_amount_minor=unit_minor, taxable=taxable if isinstance(taxable, bool)
            else None, discount_percent=discount_percent, discount_amount_minor=discount_minor,
            term=str(item["term"]) if item.get("term") not in (None, "") else None,
        )
    except ValueError as exc:
        raise ConfigurationError(f"line item {number} ({name or description!r}): {exc}") from None


def _decimal(raw: Any, number: int, what: str) -> Decimal:
    try:
        value = Decimal(str(raw).strip())
    except (InvalidOperation, ValueError):
        value = Decimal("NaN")
    if isinstance(raw, bool) or raw is None or not value.is_finite():
        raise ConfigurationError(f"line item {number}: {what} {str(raw)[:40]!r} is not a number")
    return value


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
