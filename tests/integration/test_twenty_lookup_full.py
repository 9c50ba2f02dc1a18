"""Twenty in full: the lookup's company, point of contact and other people of the company for every kind
of record, line items from a configured custom object, and composite fields written back in Twenty's shape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from billflow.actions.drafts import line_items_from_lookup
from billflow.connectors.twenty import TwentyConnector, line_item_settings, patch_body
from billflow.errors import ConfigurationError, TargetRejected

from tests.fakes.twenty_server import LINE_ITEM_OBJECT, LINE_ITEM_SETTINGS, FakeTwenty

CUSTOM_FIELDS = {"opportunity": {"billflowInvoiceId": {"type": "string"}}}


@pytest.fixture
def twenty() -> Iterator[FakeTwenty]:
    with FakeTwenty(custom_fields=CUSTOM_FIELDS, custom_objects=LINE_ITEM_OBJECT) as fake:
        yield fake


@pytest.fixture
def crm(aws: None) -> TwentyConnector:
    return TwentyConnector()


@pytest.fixture
def deal(twenty: FakeTwenty) -> dict[str, Any]:
    acme = twenty.add_company("Acme", address={"addressCity": "Lyon", "addressCountry": "France"})
    maya = twenty.add_person("Maya", "Chen", company_id=acme["id"], email="maya@acme.test")
    twenty.add_person("Leo", "Martin", company_id=acme["id"], email="leo@acme.test")
    twenty.add_person("Other", "Company", email="x@else.test")
    return twenty.add_opportunity("Robots", amount_micros=9_000_000_000, currency="EUR", company_id=acme["id"],
                                  point_of_contact_id=maya["id"])


def _connection(twenty: FakeTwenty, **settings: Any) -> Any:
    connection = twenty.connection()
    connection.settings.update(settings)
    return connection


def test_an_opportunity_brings_its_company_contact_other_people_and_line_items(
    twenty: FakeTwenty, crm: TwentyConnector, deal: dict[str, Any]
) -> None:
    twenty.add_line_item(deal["id"], "Robot arm", sku="ARM-1", quantity=3, unit_price_micros=1_250_500_000,
                         currency="EUR", discountPercent=10, taxable=True, position=2)
    twenty.add_line_item(deal["id"], "Installation", unit_price_micros=800_000_000, currency="EUR",
                         taxable=False, description="On-site, two days", position=1)
    twenty.add_line_item(deal["id"], "Support", sku="SUP-12", unit_price_micros=99_000_000, currency="EUR",
                         discountAmount={"amountMicros": 9_000_000, "currencyCode": "EUR"}, term="P12M",
                         position=3)
    other = twenty.add_opportunity("Other deal")
    twenty.add_line_item(other["id"], "Not ours", unit_price_micros=1_000_000)

    found = crm.lookup(_connection(twenty, line_items=LINE_ITEM_SETTINGS), "opportunity", deal)

    assert found["company"]["name"] == "Acme"
    assert found["contact"]["name"]["firstName"] == "Maya"
    assert [p["name"]["firstName"] for p in found["people"]] == ["Leo"]
    assert found["line_items"] == [
        {"name": "Installation", "sku": None, "quantity": "1", "unit_price": "800", "currency": "EUR",
         "discount_percent": None, "discount_amount": None, "taxable": False, "description": "On-site, two days",
         "term": None},
        {"name": "Robot arm", "sku": "ARM-1", "quantity": "3", "unit_price": "1250.5", "currency": "EUR",
         "discount_percent": "10", "discount_amount": None, "taxable": True, "description": None, "term": None},
        {"name": "Support", "sku": "SUP-12", "quantity": "1", "unit_price": "99", "currency": "EUR",
         "discount_percent": None, "discount_amount": "9", "taxable": None, "description": None, "term": "P12M"},
    ]
    lists = [r.query for r in twenty.requests if r.path == "/rest/lineItems"]
    assert lists and lists[0]["filter"] == [f'opportunityId[eq]:"{deal["id"]}"']
    assert twenty.violations == []

    lines = line_items_from_lookup(found["line_items"], "eur")
    assert [(line.description, line.product_name, line.quantity, line.unit_amount_minor) for line in lines] == [
        ("On-site, two days", "Installation", 1.0, 80000), ("Robot arm", "Robot arm", 3.0, 125050),
        ("Support", "Support", 1.0, 9900)]
    assert lines[1].discount_percent == 10 and lines[1].discount_minor() == 37515
    assert lines[2].discount_amount_minor == 900 and lines[0].taxable is False


def test_a_mapped_custom_object_with_other_field_names(twenty: FakeTwenty, crm: TwentyConnector) -> None:
    objects = {"dealLine": ("dealLines", {
        "title": {"type": "string"}, "code": {"type": "string"}, "qty": {"type": "number"},
        "price": {"type": "number"}, "deal": {"type": "string", "format": "uuid"}})}
    with FakeTwenty(custom_objects=objects) as custom:
        opp = custom.add_opportunity("Deal", amount_micros=1, currency="USD")
        custom.add_custom("dealLine", title="Widget", code="W-1", qty=2.5, price=12.4, deal=opp["id"])
        settings = {"object": "dealLine", "relation_field": "deal",
                    "fields": {"name": "title", "sku": "code", "quantity": "qty", "unit_price": "price"}}
        found = crm.lookup(_connection(custom, line_items=settings), "opportunity", opp)
    assert found["line_items"] == [{
        "name": "Widget", "sku": "W-1", "quantity": "2.5", "unit_price": "12.4", "currency": None,
        "discount_percent": None, "discount_amount": None, "taxable": None, "description": None, "term": None}]


def test_no_line_item_setting_means_no_line_item_call(
    twenty: FakeTwenty, crm: TwentyConnector, deal: dict[str, Any]
) -> None:
    found = crm.lookup(twenty.connection(), "opportunity", deal)
    assert "line_items" not in found
    assert not [r for r in twenty.requests if r.path == "/rest/lineItems"]


@pytest.mark.parametrize(("settings", "message"), [
    ({"relation_field": "opportunityId"}, "needs object"),
    ({"object": "lineItem"}, "needs relation_field"),
    ({"object": "lineItem", "relation_field": "opportunityId", "fields": {"price": "x"}}, "unknown key"),
])
def test_a_wrong_line_item_setting_says_what_to_fix(
    twenty: FakeTwenty, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        line_item_settings(_connection(twenty, line_items=settings))


def test_a_person_and_a_company_bring_their_own(twenty: FakeTwenty, crm: TwentyConnector, deal: dict[str, Any]) -> None:
    leo = next(p for p in twenty.people.values() if p["name"]["firstName"] == "Leo")
    as_person = crm.lookup(twenty.connection(), "person", leo)
    assert as_person["contact"]["id"] == leo["id"]
    assert as_person["company"]["name"] == "Acme"
    assert [p["name"]["firstName"] for p in as_person["people"]] == ["Maya"]

    acme = twenty.get("company", deal["companyId"])
    assert acme is not None
    as_company = crm.lookup(twenty.connection(), "company", acme)
    assert as_company["company"] == acme and as_company["contact"] is None
    assert sorted(p["name"]["firstName"] for p in as_company["people"]) == ["Leo", "Maya"]
    assert twenty.violations == []


def test_people_can_be_left_out(twenty: FakeTwenty, crm: TwentyConnector, deal: dict[str, Any]) -> None:
    found = crm.lookup(_connection(twenty, lookup_people=False), "opportunity", deal)
    assert "people" not in found


# --- composite fields written back ------------------------------------------------------------------
def test_composite_fields_are_written_in_twentys_shape(
    twenty: FakeTwenty, crm: TwentyConnector, deal: dict[str, Any]
) -> None:
    crm.update_record(twenty.connection(), "opportunity", deal["id"],
                      {"amount.amountMicros": "12500000", "amount.currencyCode": "usd", "billflowInvoiceId": "in_1"})
    crm.update_record(twenty.connection(), "company", deal["companyId"],
                      {"domainName": "https://acme.test", "address.addressCity": "Paris",
                       "address.addressPostcode": "75001"})
    crm.update_record(twenty.connection(), "person", deal["pointOfContactId"],
                      {"emails": "new@acme.test", "phones.primaryPhoneNumber": "+33 1 23 45 67 89"})

    assert twenty.patched("opportunity", deal["id"]) == {
        "amount": {"amountMicros": 12500000, "currencyCode": "USD"}, "billflowInvoiceId": "in_1"}
    company = twenty.get("company", deal["companyId"])
    assert company is not None
    assert company["domainName"]["primaryLinkUrl"] == "https://acme.test"
    assert company["address"]["addressCity"] == "Paris" and company["address"]["addressCountry"] == "France"
    person = twenty.get("person", deal["pointOfContactId"])
    assert person is not None
    assert person["emails"]["primaryEmail"] == "new@acme.test"
    assert person["phones"]["primaryPhoneNumber"] == "+33 1 23 45 67 89"
    assert twenty.violations == []


def test_an_unknown_sub_field_is_refused_by_twenty(
    twenty: FakeTwenty, crm: TwentyConnector, deal: dict[str, Any]
) -> None:
    with pytest.raises(TargetRejected, match="addressPlanet"):
        crm.update_record(twenty.connection(), "company", deal["companyId"], {"address.addressPlanet": "Mars"})


def test_patch_body_refuses_what_cannot_be_guessed() -> None:
    with pytest.raises(ConfigurationError, match="not a number"):
        patch_body({"amount.amountMicros": "lots"})
    with pytest.raises(ConfigurationError, match="both whole and by sub-field"):
        patch_body({"address": "x", "address.addressCity": "y"})
    assert patch_body({"name": {"firstName": "A"}, "name.lastName": "B"}) == {"name": {"firstName": "A",
                                                                                       "lastName": "B"}}
