"""Issue 11 end to end on the local runtime: a Twenty opportunity's line items (a custom lineItem object the
connection names) become the document's lines in Stripe, QuickBooks Online, Xero and Zoho Books, with
quantity, unit price, discounts and tax flags; products matched by SKU, then by name, created when the
connection allows it and listed in the failure when it does not; a rule that requires line items ends
not_matched on a deal without them. Every request is checked by the targets' contract-checking stand-ins.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from tests.e2e._targets import (
    KNOWN_PRODUCT,
    QBO_REALM,
    Deal,
    QuickBooksTarget,
    Stack,
    StripeTarget,
    Target,
    XeroTarget,
    ZohoBooksTarget,
    rule_yaml,
    start_stack,
)
from tests.fakes.twenty_server import LINE_ITEM_OBJECT, LINE_ITEM_SETTINGS

ALL = ["stripe", "quickbooks", "xero", "zoho_books"]
ACCOUNTING = ["quickbooks", "xero", "zoho_books"]
ARM = "Robot arm"  # exists in every accounting target with SKU ARM-1 before the tests
ZOHO_TAX = "zoho-tax"


def _rules(targets: dict[str, Target]) -> list[str]:
    """li-<prefix>: creates what is missing; li-<prefix>-strict: products must exist; li-<prefix>-required:
    require_line_items. Taxes: Stripe's tax rate, Xero's OUTPUT / EXEMPTOUTPUT, Zoho's tax (id filled in
    below), QuickBooks US TAX / NON."""
    rules = []
    for target in targets.values():
        own: dict[str, Any] = {"customer_id_field": target.customer_field, "days_until_due": 14}
        if isinstance(target, StripeTarget):
            own["tax_rates"] = [target.tax_rate]
        if isinstance(target, XeroTarget):
            own |= {"tax_type": "OUTPUT", "tax_type_exempt": "EXEMPTOUTPUT"}
        if isinstance(target, ZohoBooksTarget):
            own["tax_id"] = target.zoho.add_tax("Sales tax", 10)
        doc = f"{target.key}.invoice"
        rules += [
            rule_yaml(f"li-{target.prefix}", doc, target.prefix, target.document_field, own),
            rule_yaml(f"li-{target.prefix}-strict", doc, f"{target.prefix}-strict", target.document_field, own),
            rule_yaml(f"li-{target.prefix}-required", doc, target.prefix, target.document_field,
                      {**own, "require_line_items": True}),
        ]
    return rules


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # A self-hosted workspace's limit (rate_limit_per_minute): the module makes more than 100 list calls a
    # minute; the default budget is tested in tests/integration/test_twenty_search.py.
    started = start_stack(tmp_path_factory.mktemp("rules"), extra_rules=_rules, custom_objects=LINE_ITEM_OBJECT,
                          twenty_settings={"line_items": LINE_ITEM_SETTINGS, "rate_limit_per_minute": 100_000})
    targets = started.targets
    qbo = targets["quickbooks"]
    assert isinstance(qbo, QuickBooksTarget)
    qbo.qbo.seed(QBO_REALM, "Item", {"Name": ARM, "Sku": "ARM-1", "Type": "Service", "UnitPrice": 1000,
                                     "IncomeAccountRef": {"value": "1", "name": "Services"}})
    xero = targets["xero"]
    assert isinstance(xero, XeroTarget)
    xero.xero.add_item("ARM-1", ARM, unit_price=1000)
    zoho = targets["zoho_books"]
    assert isinstance(zoho, ZohoBooksTarget)
    zoho.zoho.add_item(ARM, rate=1000, sku="ARM-1")
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def target(stack: Stack, request: pytest.FixtureRequest) -> Iterator[Target]:
    chosen = stack.targets[request.param]
    yield chosen
    assert chosen.fake.violations == []
    assert stack.twenty.violations == []


def _deal_with_items(stack: Stack, tag: str) -> tuple[Deal, str]:
    """A won deal with three line items; the new product's name (unique to the deal)."""
    deal = stack.deal(tag)
    new_product = f"Support plan {uuid.uuid4().hex[:6]}"
    twenty = stack.twenty
    # Matched by SKU (its name differs from the product's), 10% off, taxable.
    twenty.add_line_item(deal.id, "Robot arm, second generation", sku="ARM-1", quantity=3,
                         unit_price_micros=1_250_500_000, discountPercent=10, taxable=True, position=1)
    # Matched by name, not taxable.
    twenty.add_line_item(deal.id, KNOWN_PRODUCT, quantity=1, unit_price_micros=800_000_000, taxable=False,
                         position=2)
    # Nobody has it: created (or, strict, listed in the failure); 9.00 off the line, taxable.
    twenty.add_line_item(deal.id, new_product, sku=f"SUP-{new_product[-6:]}", quantity=2,
                         unit_price_micros=99_000_000, taxable=True,
                         discountAmount={"amountMicros": 9_000_000, "currencyCode": "USD"}, position=3)
    return deal, new_product


# --- per target: the document's lines ---------------------------------------------------------------------
def _stripe_lines(target: Target, document: dict[str, Any]) -> list[tuple[Any, ...]]:
    assert isinstance(target, StripeTarget)
    items = target.stripe.items_of(document["id"])
    return [(i["description"], i["quantity"], i["amount"], bool(i.get("tax_rates"))) for i in items]


def _sales_lines(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [ln for ln in document["Line"] if ln["DetailType"] == "SalesItemLineDetail"]


@pytest.mark.parametrize("target", ALL, indirect=True)
def test_three_line_items_become_three_lines_with_discounts_and_tax_flags(stack: Stack, target: Target) -> None:
    deal, new_product = _deal_with_items(stack, f"li-{target.prefix}")

    execution = stack.run(deal)

    assert execution["status"] == "SUCCEEDED", execution
    [document] = target.documents(deal)
    if isinstance(target, StripeTarget):
        assert _stripe_lines(target, document) == [
            ("Robot arm, second generation", 3, 375150, True),
            ("Discount: Robot arm, second generation (10%)", 1, -37515, True),
            (KNOWN_PRODUCT, 1, 80000, False),
            (new_product, 2, 19800, True),
            (f"Discount: {new_product} (amount)", 1, -900, True),
        ]
        assert document["subtotal"] == 375150 - 37515 + 80000 + 19800 - 900
    elif isinstance(target, QuickBooksTarget):
        lines = _sales_lines(document)
        items = {i["Id"]: i for i in target.qbo.all(QBO_REALM, "Item")}
        assert [(items[ln["SalesItemLineDetail"]["ItemRef"]["value"]]["Name"], ln["SalesItemLineDetail"]["Qty"],
                 ln["SalesItemLineDetail"]["UnitPrice"], ln["Amount"], ln["SalesItemLineDetail"]["TaxCodeRef"]["value"])
                for ln in lines] == [
            (ARM, 3, 1250.5, 3751.5, "TAX"), (KNOWN_PRODUCT, 1, 800, 800, "NON"), (new_product, 2, 99, 198, "TAX")]
        [discount] = [ln for ln in document["Line"] if ln["DetailType"] == "DiscountLineDetail"]
        assert Decimal(str(discount["Amount"])) == Decimal("384.15")  # 375.15 + 9.00
        assert "line 1" in discount["Description"] and "line 3" in discount["Description"]
        assert Decimal(str(document["TotalAmt"])) > 0
    elif isinstance(target, XeroTarget):
        lines = document["LineItems"]
        assert [(ln["ItemCode"], ln["Quantity"], ln["UnitAmount"], ln.get("DiscountRate"), ln.get("DiscountAmount"),
                 ln["TaxType"]) for ln in lines] == [
            ("ARM-1", 3, Decimal("1250.5"), 10, None, "OUTPUT"),
            ("FLEET-1", 1, Decimal("800"), None, None, "EXEMPTOUTPUT"),
            (lines[2]["ItemCode"], 2, Decimal("99"), None, 9, "OUTPUT")]
        assert [Decimal(str(ln["LineAmount"])) for ln in lines] == [Decimal("3376.35"), Decimal("800"), Decimal("189")]
        assert target.products(new_product)  # created, and used by its code
    else:
        assert isinstance(target, ZohoBooksTarget)
        lines = document["line_items"]
        names = {i["item_id"]: i["name"] for i in target.zoho.items.values()}
        assert [(names[ln["item_id"]], ln["quantity"], ln["rate"], ln["discount"], bool(ln["tax_id"]))
                for ln in lines] == [
            (ARM, 3, 1250.5, 375.15, True), (KNOWN_PRODUCT, 1, 800, 0, False), (new_product, 2, 99, 9, True)]
        assert document["discount_type"] == "item_level"
    if target.has_products:
        [created] = target.products(new_product)
        assert created  # create-if-missing made the one product nobody had
    assert stack.twenty.patched("opportunity", deal.id) == {target.document_field: target.document_id(document)}


@pytest.mark.parametrize("target", ACCOUNTING, indirect=True)
def test_a_missing_product_without_create_if_missing_fails_listing_it(stack: Stack, target: Target) -> None:
    deal, new_product = _deal_with_items(stack, f"li-{target.prefix}-strict")
    target.seed_customer(deal)  # the strict connection finds the customer: only the product is missing

    execution = stack.run(deal)

    assert execution["status"] == "FAILED", execution
    assert target.documents(deal) == []
    assert target.products(new_product) == []
    reason = stack.failure_reason(deal)
    assert f"line 3 ('{new_product}'" in reason and "nothing was created" in reason
    assert "line 1" not in reason and "line 2" not in reason  # matched by SKU and by name


@pytest.mark.parametrize("target", ALL, indirect=True)
def test_require_line_items_ends_not_matched_on_a_deal_without_them(stack: Stack, target: Target) -> None:
    deal = stack.deal(f"li-{target.prefix}-required")

    execution = stack.run(deal)

    assert execution["status"] == "SUCCEEDED", execution  # a quiet end, not a failure
    assert target.documents(deal) == []
    [entry] = [e for e in stack.log_for(deal) if e["status"] == "not_matched"]
    assert "no line items" in entry["reason"] and "require_line_items" in entry["reason"]


@pytest.mark.parametrize("target", ["stripe", "xero"], indirect=True)
def test_a_deal_without_line_items_keeps_one_line_from_its_amount(stack: Stack, target: Target) -> None:
    deal = stack.deal(f"li-{target.prefix}", amount_micros=1_250_000_000)

    assert stack.run(deal)["status"] == "SUCCEEDED"

    [document] = target.documents(deal)
    if isinstance(target, StripeTarget):
        assert [(d, q, a) for d, q, a, _ in _stripe_lines(target, document)] == [(deal.name, 1, 125000)]
    else:
        [line] = document["LineItems"]
        assert (line["Description"], line["UnitAmount"]) == (deal.name, Decimal("1250"))
