"""Validates QuickBooks Online entity bodies (JSON) against Intuit's official XML Schema.

QuickBooks' JSON and XML forms carry the same element names (see tests/contracts/quickbooks/SOURCE.md), so
a JSON entity is mapped to the XML it stands for and validated with xmlschema against Finance.xsd:
- an object becomes an element whose children are put in the order the type's content model gives them
  (XML Schema sequences are ordered, JSON objects are not);
- a key naming an attribute of the type becomes that attribute (Intuit's JSON writes "sparse", "domain",
  a reference's "name" and "type" as keys);
- a type with simple content (ReferenceType, MemoRef) takes its text from "value": {"value": "1",
  "name": "Acme"} is <CustomerRef name="Acme">1</CustomerRef>;
- a list repeats the element; true/false and numbers are written as XML Schema spells them; null is
  left out (as Intuit's JSON reader treats it);
- keys the type does not know are written as elements (or attributes) anyway, so the validator rejects
  them as QuickBooks would.

The XSD makes almost everything optional. What QuickBooks requires in practice (Intuit's API reference,
and the contracts README: CustomerRef, Line with Amount, DetailType SalesItemLineDetail and ItemRef) is
checked by practical_errors().

Only files under tests/contracts/quickbooks/ are read.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import xmlschema

CONTRACT_DIR = Path(__file__).resolve().parents[1] / "contracts" / "quickbooks"
SCHEMA_PATH = CONTRACT_DIR / "entities.xsd"
NS = "http://schema.intuit.com/finance/v3"
ENTITIES = ("Customer", "Item", "Invoice", "Estimate", "SalesReceipt", "Payment", "RefundReceipt", "Purchase")
SALES_TRANSACTIONS = ("Invoice", "Estimate", "SalesReceipt", "RefundReceipt")
# Line detail types a sales transaction takes (Intuit API reference, Invoice.Line).
SALES_LINE_DETAILS = ("SalesItemLineDetail", "GroupLineDetail", "DescriptionOnly", "DiscountLineDetail",
                      "SubTotalLineDetail")
# The element holding a line's details is named after its DetailType, except for description lines.
DETAIL_ELEMENTS = {"DescriptionOnly": "DescriptionLineDetail"}
PURCHASE_LINE_DETAILS = ("AccountBasedExpenseLineDetail", "ItemBasedExpenseLineDetail")
NAME_FIELDS = ("DisplayName", "Title", "GivenName", "MiddleName", "FamilyName", "Suffix")
ITEM_TYPES_WITH_INCOME_ACCOUNT = ("Service", "NonInventory")
PAYMENT_TYPES = ("Cash", "Check", "CreditCard")


@cache
def schema() -> xmlschema.XMLSchema:
    """Loaded once per process (about a second)."""
    return xmlschema.XMLSchema(str(SCHEMA_PATH))


# --- JSON -> XML -----------------------------------------------------------------------------------
def to_xml(entity: str, doc: Any) -> ET.Element:
    """The XML element a JSON entity body stands for (see the module docstring for the mapping)."""
    if entity not in ENTITIES:
        raise ValueError(f"no element declared for {entity!r}")
    element = ET.Element(f"{{{NS}}}{entity}")
    _fill(element, schema().elements[entity].type, doc)
    return element


def _fill(element: ET.Element, xsd_type: Any, value: Any) -> None:
    if xsd_type is None:  # a key the schema does not know: written out as is, for the validator to reject
        _fill_untyped(element, value)
        return
    if xsd_type.is_simple():
        if isinstance(value, dict | list):
            _fill_untyped(element, value)  # an object where a value belongs: invalid, reported as such
        else:
            element.text = _scalar(value)
        return
    if xsd_type.has_simple_content():
        if not isinstance(value, dict):
            element.text = _scalar(value)  # {"CustomerRef": "1"}: readable text, but see practical_errors
            element.set("json-scalar-instead-of-object", "true")  # no such attribute: rejected
            return
        for key, item in value.items():
            if item is None:
                continue
            if key == "value":
                element.text = _scalar(item)
            else:
                element.set(key, _scalar(item))
        return
    if not isinstance(value, dict):
        element.text = _scalar(value)  # a complex type given a scalar: the validator rejects the text
        return
    children = {e.local_name: e for e in xsd_type.content.iter_elements()}
    order = {name: index for index, name in enumerate(children)}
    attributes = set(xsd_type.attributes) if hasattr(xsd_type, "attributes") else set()
    keys = sorted((k for k, v in value.items() if v is not None),
                  key=lambda k: (order.get(k, len(order)), k))
    for key in keys:
        item = value[key]
        if key in attributes and not isinstance(item, dict | list):
            element.set(key, _scalar(item))
            continue
        child_decl = children.get(key)
        child_type = child_decl.type if child_decl is not None else None
        for entry in item if isinstance(item, list) else [item]:
            if entry is None:
                continue
            child = ET.SubElement(element, f"{{{NS}}}{key}")
            _fill(child, child_type, entry)


def _fill_untyped(element: ET.Element, value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            for entry in item if isinstance(item, list) else [item]:
                _fill_untyped(ET.SubElement(element, f"{{{NS}}}{key}"), entry)
    elif isinstance(value, list):
        for entry in value:
            _fill_untyped(ET.SubElement(element, f"{{{NS}}}item"), entry)
    elif value is not None:
        element.text = _scalar(value)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return format(Decimal(str(value)), "f")  # 1e-05 is not an xs:decimal; 0.00001 is
    return str(value)


# --- validation ------------------------------------------------------------------------------------
def validate_entity(entity: str, doc: Any) -> list[str]:
    """Everything QuickBooks would refuse in this entity body: schema errors, then practical rules."""
    if not isinstance(doc, dict):
        return [f"{entity}: the body must be a JSON object"]
    errors = schema_errors(entity, doc)
    return errors + practical_errors(entity, doc)


def schema_errors(entity: str, doc: dict[str, Any]) -> list[str]:
    element = to_xml(entity, doc)
    found = []
    for error in schema().iter_errors(element):
        where = error.path or f"/{entity}"
        found.append(f"{where.replace('{' + NS + '}', '')}: {error.reason or error.message}")
    return found


def practical_errors(entity: str, doc: dict[str, Any]) -> list[str]:
    """QuickBooks' requirements beyond the XSD, for the entities billflow creates."""
    errors: list[str] = []
    # a customer is required on invoices, estimates and payments; optional on receipts, but then valid
    if entity in ("Invoice", "Estimate", "Payment") or (entity in SALES_TRANSACTIONS and "CustomerRef" in doc):
        _require_ref(doc, "CustomerRef", entity, errors)
    if entity in SALES_TRANSACTIONS:
        _check_lines(doc, entity, SALES_LINE_DETAILS, errors)
        for index, line in enumerate(_lines(doc)):
            detail = line.get("SalesItemLineDetail")
            if line.get("DetailType") == "SalesItemLineDetail" and isinstance(detail, dict):
                _require_ref(detail, "ItemRef", f"{entity}.Line[{index}].SalesItemLineDetail", errors)
                if "TaxCodeRef" in detail:
                    _require_ref(detail, "TaxCodeRef", f"{entity}.Line[{index}].SalesItemLineDetail", errors)
        if entity == "RefundReceipt":
            _require_ref(doc, "DepositToAccountRef", entity, errors)  # the account the refund is paid from
    elif entity == "Payment":
        if "TotalAmt" not in doc:
            errors.append("Payment: TotalAmt is required")
        for index, line in enumerate(_lines(doc)):
            if "Amount" not in line:
                errors.append(f"Payment.Line[{index}]: Amount is required")
            linked = line.get("LinkedTxn")
            if not isinstance(linked, list) or not linked or not all(
                isinstance(t, dict) and t.get("TxnId") and t.get("TxnType") for t in linked
            ):
                errors.append(f"Payment.Line[{index}]: LinkedTxn with TxnId and TxnType is required")
    elif entity == "Purchase":
        _require_ref(doc, "AccountRef", entity, errors)
        if doc.get("PaymentType") not in PAYMENT_TYPES:
            errors.append(f"Purchase: PaymentType must be one of {', '.join(PAYMENT_TYPES)}")
        _check_lines(doc, entity, PURCHASE_LINE_DETAILS, errors)
        for index, line in enumerate(_lines(doc)):
            detail = line.get("AccountBasedExpenseLineDetail")
            if line.get("DetailType") == "AccountBasedExpenseLineDetail" and isinstance(detail, dict):
                _require_ref(detail, "AccountRef", f"Purchase.Line[{index}].AccountBasedExpenseLineDetail",
                             errors)
            detail = line.get("ItemBasedExpenseLineDetail")
            if line.get("DetailType") == "ItemBasedExpenseLineDetail" and isinstance(detail, dict):
                _require_ref(detail, "ItemRef", f"Purchase.Line[{index}].ItemBasedExpenseLineDetail", errors)
    elif entity == "Customer":
        if not any(isinstance(doc.get(k), str) and doc[k].strip() for k in NAME_FIELDS):
            errors.append(f"Customer: one of {', '.join(NAME_FIELDS)} is required")
    elif entity == "Item":
        if not (isinstance(doc.get("Name"), str) and doc["Name"].strip()):
            errors.append("Item: Name is required")
        elif ":" in doc["Name"]:
            errors.append("Item: Name cannot contain a colon (it separates sub-item names)")
        if doc.get("Type") in ITEM_TYPES_WITH_INCOME_ACCOUNT:
            _require_ref(doc, "IncomeAccountRef", "Item", errors)
        elif "Type" not in doc:
            errors.append("Item: Type is required")
    return errors


def _lines(doc: dict[str, Any]) -> list[dict[str, Any]]:
    lines = doc.get("Line")
    return [line for line in lines if isinstance(line, dict)] if isinstance(lines, list) else []


def _check_lines(doc: dict[str, Any], entity: str, detail_types: tuple[str, ...], errors: list[str]) -> None:
    lines = doc.get("Line")
    if lines is not None and not isinstance(lines, list):
        errors.append(f"{entity}: Line must be an array of lines")
        return
    if not lines:
        errors.append(f"{entity}: at least one Line is required")
        return
    for index, line in enumerate(lines):
        where = f"{entity}.Line[{index}]"
        if not isinstance(line, dict):
            errors.append(f"{where}: must be an object")
            continue
        if "Amount" not in line:
            errors.append(f"{where}: Amount is required")
        detail_type = line.get("DetailType")
        if detail_type not in detail_types:
            errors.append(f"{where}: DetailType must be one of {', '.join(detail_types)}, got {detail_type!r}")
            continue
        element = DETAIL_ELEMENTS.get(detail_type, detail_type)
        present = [k for k in line if k.endswith("LineDetail")]
        if detail_type != "DescriptionOnly" and element not in line:
            errors.append(f"{where}: DetailType {detail_type} needs a {element} object")
        extra = [k for k in present if k != element]
        if extra:
            errors.append(f"{where}: {', '.join(extra)} does not match DetailType {detail_type}")


def _require_ref(doc: dict[str, Any], key: str, where: str, errors: list[str]) -> None:
    ref = doc.get(key)
    if not isinstance(ref, dict) or not isinstance(ref.get("value"), str) or not ref["value"].strip():
        errors.append(f"{where}: {key} with a value is required")
