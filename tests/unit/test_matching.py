"""The customer and product matching rules every accounting target shares (billflow.connectors.matching)."""

from __future__ import annotations

from typing import Any

import pytest
from billflow.connectors.matching import (
    CustomerCriterion,
    CustomerMatch,
    ProductCriterion,
    customer_criteria,
    customer_matching_mode,
    find_customer,
    flag_setting,
    match_products,
    product_criteria,
    products_to_create,
    require_customer,
)
from billflow.errors import ConfigurationError, CustomerNotFound, ProductNotFound
from billflow.models.documents import CustomerInfo, LineItem
from billflow.storage.secrets import Connection


def _customer(**fields: Any) -> CustomerInfo:
    return CustomerInfo(**{"name": "Acme Ltd", "email": "ap@acme.example", "first_name": "Ada",
                           "last_name": "Lovelace", "external_id": "42", **fields})


def _connection(**settings: Any) -> Connection:
    return Connection("books", "xero", settings)


# --- customers -------------------------------------------------------------------------------------
def test_customer_criteria_go_id_email_person_then_display_name() -> None:
    assert customer_criteria(_customer()) == [
        CustomerCriterion("id", ("42",)), CustomerCriterion("email", ("ap@acme.example",)),
        CustomerCriterion("person_name", ("Ada", "Lovelace")), CustomerCriterion("name", ("Acme Ltd",))]


def test_missing_parts_are_skipped_and_a_person_needs_both_names() -> None:
    criteria = customer_criteria(_customer(external_id=" ", email=None, last_name=None))
    assert [c.field for c in criteria] == ["name"]


def test_find_customer_stops_at_the_first_hit() -> None:
    asked: list[str] = []

    def lookup(criterion: CustomerCriterion) -> dict[str, str] | None:
        asked.append(criterion.field)
        return {"id": "c1"} if criterion.field == "email" else None

    match = find_customer(_customer(), lookup)
    assert match.found == {"id": "c1"}
    assert match.criterion is not None
    assert match.criterion.field == "email"
    assert asked == ["id", "email"]
    assert not match.must_create


def test_nothing_found_is_created_unless_strict() -> None:
    match: CustomerMatch[str] = find_customer(_customer(), lambda criterion: None)
    assert match.must_create
    require_customer(match, mode="create_if_missing", target="Xero")  # no error: the caller creates
    with pytest.raises(CustomerNotFound) as caught:
        require_customer(match, mode="strict", target="Xero")
    message = caught.value.message
    assert message.startswith("no Xero customer matches id '42', the email address, first and last name")
    assert "ap@acme.example" not in message  # error messages end up in logs
    assert caught.value.details["tried"] == ["id", "email", "person_name", "name"]


def test_strict_with_a_match_does_not_raise() -> None:
    require_customer(find_customer(_customer(), lambda c: "found"), mode="strict", target="Zoho Books")


def test_customer_matching_mode_defaults_and_validates() -> None:
    assert customer_matching_mode(_connection()) == "create_if_missing"
    assert customer_matching_mode(_connection(customer_matching="strict")) == "strict"
    with pytest.raises(ConfigurationError, match="customer_matching"):
        customer_matching_mode(_connection(customer_matching="sometimes"))


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), ("true", True), ("No", False),
                                                 ("1", True)])
def test_flag_setting_reads_json_and_text(value: Any, expected: bool) -> None:
    assert flag_setting(_connection(create_products=value), "create_products") is expected


def test_flag_setting_default_and_nonsense() -> None:
    assert flag_setting(_connection(), "create_products") is False
    assert flag_setting(_connection(), "create_products", default=True) is True
    with pytest.raises(ConfigurationError, match="create_products"):
        flag_setting(_connection(create_products="maybe"), "create_products")


# --- products --------------------------------------------------------------------------------------
def test_product_criteria_sku_then_name_then_description() -> None:
    assert product_criteria(LineItem(description="Widget, blue", unit_amount_minor=1, sku=" W-1 ",
                                     product_name="Widget")) == [
        ProductCriterion("sku", "W-1"), ProductCriterion("name", "Widget")]
    assert product_criteria(LineItem(description="Consulting", unit_amount_minor=1)) == [
        ProductCriterion("name", "Consulting")]


def test_match_products_falls_back_to_the_name_and_asks_each_question_once() -> None:
    catalog = {("name", "Widget"): "item-widget", ("sku", "C-1"): "item-consulting"}
    asked: list[ProductCriterion] = []

    def lookup(criterion: ProductCriterion) -> str | None:
        asked.append(criterion)
        return catalog.get((criterion.field, criterion.value))

    lines = [LineItem(description="Widget", unit_amount_minor=1, sku="W-NEW", product_name="Widget"),
             LineItem(description="Consulting", unit_amount_minor=1, sku="C-1"),
             LineItem(description="Widget again", unit_amount_minor=1, sku="W-NEW", product_name="Widget")]
    matches = match_products(lines, lookup, create_missing=False, target="Zoho Books")

    assert [m.found for m in matches] == ["item-widget", "item-consulting", "item-widget"]
    assert [m.criterion.field if m.criterion else None for m in matches] == ["name", "sku", "name"]
    assert asked == [ProductCriterion("sku", "W-NEW"), ProductCriterion("name", "Widget"),
                     ProductCriterion("sku", "C-1")]


def test_unmatched_lines_are_all_listed_when_products_may_not_be_created() -> None:
    lines = [LineItem(description="A", unit_amount_minor=1, sku="A-1"),
             LineItem(description="Known", unit_amount_minor=1, sku="K-1"),
             LineItem(description="Thing", unit_amount_minor=1, product_name="Gadget")]
    with pytest.raises(ProductNotFound) as caught:
        match_products(lines, lambda c: "k" if c.value == "K-1" else None, create_missing=False,
                       target="Xero")
    assert caught.value.message == ("no Xero product matches line 1 ('A', SKU 'A-1'), line 3 ('Gadget'); "
                                    "create_products is off, so nothing was created")
    assert caught.value.details["unmatched_lines"] == [
        {"line": 1, "sku": "A-1", "name": "A"}, {"line": 3, "sku": None, "name": "Gadget"}]


def test_products_to_create_are_distinct_and_know_their_lines() -> None:
    lines = [LineItem(description="Setup", unit_amount_minor=500, sku="S-1", product_name="Setup"),
             LineItem(description="Known", unit_amount_minor=1, sku="K-1"),
             LineItem(description="Setup, site 2", unit_amount_minor=500, sku="S-1", product_name="Setup"),
             LineItem(description="Support", unit_amount_minor=900)]
    matches = match_products(lines, lambda c: "k" if c.value == "K-1" else None, create_missing=True,
                             target="Xero")
    planned = products_to_create(matches)

    assert [(p.sku, p.name, p.line_indexes) for p in planned] == [("S-1", "Setup", [0, 2]),
                                                                 (None, "Support", [3])]
    assert planned[0].line is lines[0]


def test_preset_lines_are_not_looked_up() -> None:
    asked: list[ProductCriterion] = []

    def lookup(criterion: ProductCriterion) -> str | None:
        asked.append(criterion)
        return None

    lines = [LineItem(description="Deal 42", unit_amount_minor=1), LineItem(description="X", unit_amount_minor=1)]
    matches = match_products(lines, lookup, create_missing=True, target="QuickBooks", preset={0: "default"})
    assert matches[0].found == "default"
    assert asked == [ProductCriterion("name", "X")]
    assert [p.name for p in products_to_create(matches)] == ["X"]


def test_lines_sharing_a_sku_or_a_name_make_one_new_product() -> None:
    lines = [LineItem(description="Widget, blue", unit_amount_minor=1999, sku="W-1"),
             LineItem(description="Widget (spare part)", unit_amount_minor=500, sku="w-1"),
             LineItem(description="Setup", unit_amount_minor=100),
             LineItem(description="setup", unit_amount_minor=100, sku="S-1")]
    matches = match_products(lines, lambda c: None, create_missing=True, target="Zoho Books")
    assert [(p.sku, p.name, p.line_indexes) for p in products_to_create(matches)] == [
        ("W-1", "Widget, blue", [0, 1]), ("S-1", "Setup", [2, 3])]


def test_a_single_match_is_taken_and_several_are_listed_not_guessed() -> None:
    from billflow.connectors.matching import CustomerCriterion, single_match
    from billflow.errors import AmbiguousCustomer

    email = CustomerCriterion("email", ("ap@example.test",))
    assert single_match([], email, target="Target", describe=str) is None
    assert single_match(["c1"], email, target="Target", describe=str) == "c1"
    with pytest.raises(AmbiguousCustomer) as caught:
        single_match([f"c{n}" for n in range(12)], email, target="Target", describe=str)
    assert caught.value.details == {"candidates": [f"c{n}" for n in range(10)], "matched_by": "email"}
    assert "12 Target customers match the email address: c0; c1" in caught.value.message
    assert "and 2 more" in caught.value.message
    assert "ap@example.test" not in caught.value.message
