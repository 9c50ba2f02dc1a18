"""HubSpot's CRM objects as billflow names and reads them: shared by the webhook source and the CRM connector.

HubSpot records are {id, properties (all strings), createdAt, updatedAt, archived}. billflow keeps every
property under its own name (rules say `dealstage`, `hs_payment_status`, as HubSpot users know them) and adds
the few keys the document formatters read, in the shape every source gives them: `id`, `name`, and `amount`
as {amountMicros, currencyCode} (HubSpot's own `amount` property is the decimal text, now `amount.value`);
companies get `address` as {addressStreet1, addressCity, ...} (HubSpot's `address` property is the street,
now `address.addressStreet1`); contacts get `name` {firstName, lastName} and `emails` {primaryEmail}.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any


@dataclass(frozen=True)
class HubSpotObject:
    name: str  # billflow's object name (CrmEvent.object, rules' `object`)
    path: str  # the CRM v3 path segment: /crm/v3/objects/{path}
    type_id: str  # objectTypeId, what `object.*` webhook events carry


OBJECTS: tuple[HubSpotObject, ...] = (
    HubSpotObject("contact", "contacts", "0-1"),
    HubSpotObject("company", "companies", "0-2"),
    HubSpotObject("deal", "deals", "0-3"),
    HubSpotObject("ticket", "tickets", "0-5"),
    HubSpotObject("product", "products", "0-7"),
    HubSpotObject("line_item", "line_items", "0-8"),
    HubSpotObject("quote", "quotes", "0-14"),
    HubSpotObject("invoice", "invoices", "0-53"),
    HubSpotObject("commerce_payment", "commerce_payments", "0-101"),
)
BY_NAME = {o.name: o for o in OBJECTS}
BY_TYPE_ID = {o.type_id: o for o in OBJECTS}
BY_PATH = {o.path: o for o in OBJECTS}
# Other spellings rules and events use for the same objects.
ALIASES = {"payment": "commerce_payment", "commerce_payments": "commerce_payment", "deals": "deal",
           "companies": "company", "contacts": "contact", "quotes": "quote", "line_items": "line_item",
           "lineitem": "line_item", "invoices": "invoice", "0-3": "deal"}

# Where each object keeps its amount, its currency and its display name.
_AMOUNT = {
    "deal": ("amount", "deal_currency_code"),
    "quote": ("hs_quote_amount", "hs_currency"),
    "commerce_payment": ("hs_initial_amount", "hs_currency_code"),
    "invoice": ("hs_amount_billed", "hs_currency"),
    "line_item": ("amount", "hs_line_item_currency_code"),
}
_NAME = {"deal": "dealname", "quote": "hs_title", "company": "name", "product": "name", "line_item": "name",
         "invoice": "hs_number", "commerce_payment": "hs_reference_number"}


def hubspot_object(name: str) -> HubSpotObject | None:
    """The object a rule or event names (deal, deals, 0-3, payment...), or None."""
    key = ALIASES.get(name, name)
    return BY_NAME.get(key) or BY_TYPE_ID.get(key) or BY_PATH.get(key)


def to_micros(text: Any) -> int | None:
    """A HubSpot decimal property ("1500.5") as millionths; None when empty or not a number."""
    if text is None or isinstance(text, bool):
        return None
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    return int((value * 1_000_000).to_integral_value(rounding=ROUND_HALF_EVEN))


def normalise_record(object_name: str, record_id: str, properties: dict[str, Any]) -> dict[str, Any]:
    """A HubSpot record as billflow reads it (see the module docstring). `properties` may be partial: a
    webhook carries one property, and only the keys it gives are derived."""
    record: dict[str, Any] = dict(properties)
    record["id"] = record_id
    record.setdefault("hs_object_id", record_id)
    name_property = _NAME.get(object_name)
    if name_property and properties.get(name_property):
        record["name"] = properties[name_property]
    if object_name in _AMOUNT:
        amount_property, currency_property = _AMOUNT[object_name]
        if amount_property in properties:
            record["amount"] = {
                "amountMicros": to_micros(properties.get(amount_property)),
                "currencyCode": (properties.get(currency_property) or None),
                "value": properties.get(amount_property),
            }
    if object_name == "company" and any(k in properties for k in ("address", "city", "zip", "country")):
        record["address"] = {
            "addressStreet1": properties.get("address") or "",
            "addressStreet2": properties.get("address2") or "",
            "addressCity": properties.get("city") or "",
            "addressState": properties.get("state") or "",
            "addressPostcode": properties.get("zip") or "",
            "addressCountry": properties.get("country") or "",
        }
    if object_name == "contact":
        if "firstname" in properties or "lastname" in properties:
            record["name"] = {"firstName": properties.get("firstname") or "",
                              "lastName": properties.get("lastname") or ""}
        if "email" in properties:
            record["emails"] = {"primaryEmail": properties.get("email") or "", "additionalEmails": []}
    return record
