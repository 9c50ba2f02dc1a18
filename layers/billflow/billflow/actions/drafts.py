"""From a CRM record and its lookup to a target-neutral InvoiceDraft."""

from __future__ import annotations

from typing import Any

from billflow.countries import country_code
from billflow.errors import ConfigurationError
from billflow.models.documents import Address, CustomerInfo, InvoiceDraft, LineItem
from billflow.models.rules import Action
from billflow.money import micros_to_minor
from billflow.rules.templates import render

# Options a rule may give a document action; the rest go to the connector untouched.
_MAPPING_OPTIONS = {"description", "currency", "customer_id_field", "days_until_due", "memo", "reference"}


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
        return [LineItem.model_validate(item) for item in items]
    micros = amount.get("amountMicros")
    if micros in (None, ""):
        raise ConfigurationError("the record has no amount.amountMicros to invoice")
    description = options.get("description") or record.get("name") or "Services"
    return [LineItem(description=str(description), unit_amount_minor=micros_to_minor(micros, currency))]


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
