"""billflow.connectors.hubspot against the HubSpot stand-in (which checks every call against HubSpot's official
CRM v3 and associations v4 contracts): lookups, write-back, search with its limits, OAuth and private apps."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from billflow.connectors import get_crm
from billflow.connectors.base import RecordFilter, RecordQuery, iter_records
from billflow.connectors.hubspot import HubSpotConnector, SearchThrottle
from billflow.connectors.oauth import reset_token_stores

from billflow_local.standins.hubspot_server import FakeHubSpot


class FakeClock:
    """Time for the throttle and the stand-in's rate limiter at once: sleeping advances it, nobody waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hubspot(clock: FakeClock) -> Iterator[FakeHubSpot]:
    reset_token_stores()
    with FakeHubSpot(clock=clock) as server:
        yield server
    reset_token_stores()


@pytest.fixture
def crm(clock: FakeClock) -> HubSpotConnector:
    return HubSpotConnector(SearchThrottle(clock=clock, sleep=clock.sleep))


def a_deal(hubspot: FakeHubSpot, **extra: Any) -> dict[str, str]:
    company = hubspot.add("company", {"name": "Acme Robotics", "address": "4 Quai", "city": "Lyon", "zip": "69002",
                                      "country": "France", "stripe_customer_id": "cus_1"})
    first = hubspot.add("contact", {"firstname": "Maya", "lastname": "Chen", "email": "maya@acme.example"})
    second = hubspot.add("contact", {"firstname": "Ravi", "lastname": "Patel", "email": "ravi@acme.example"})
    lines = [
        hubspot.add("line_item", {"name": "Support", "quantity": "12", "price": "49.90", "hs_position_on_quote": "1",
                                  "recurringbillingfrequency": "monthly", "hs_recurring_billing_period": "P12M",
                                  "hs_discount_percentage": "15", "tax": "0"}),
        hubspot.add("line_item", {"name": "Robot arm", "hs_sku": "ARM-7", "quantity": "2", "price": "12500.00",
                                  "discount": "250", "hs_tax_rate": "20", "hs_position_on_quote": "0",
                                  "description": "7-axis", "hs_line_item_currency_code": "EUR"}),
    ]
    deal = hubspot.add("deal", {"dealname": "Acme arms", "amount": "25598.80", "deal_currency_code": "EUR",
                                "dealstage": "closedwon", **extra},
                       associations={"company": [company], "contact": [first, second], "line_item": lines})
    return {"deal": deal, "company": company, "first": first, "second": second}


def test_the_registry_serves_the_hubspot_crm() -> None:
    assert isinstance(get_crm("hubspot"), HubSpotConnector)


def test_a_deal_lookup_reads_the_deal_company_first_contact_and_line_items(
    hubspot: FakeHubSpot, crm: HubSpotConnector,
) -> None:
    ids = a_deal(hubspot)
    found = crm.lookup(hubspot.connection(), "deal", {"id": ids["deal"], "dealstage": "closedwon"})

    record = found["record"]
    assert record["id"] == ids["deal"] and record["name"] == "Acme arms"
    assert record["amount"] == {"amountMicros": 25_598_800_000, "currencyCode": "EUR", "value": "25598.80"}
    assert record["companyId"] == ids["company"] and record["pointOfContactId"] == ids["first"]
    assert found["company"]["name"] == "Acme Robotics"
    assert found["company"]["address"]["addressCity"] == "Lyon"
    assert found["company"]["stripe_customer_id"] == "cus_1"
    assert found["contact"]["id"] == ids["first"]  # the first associated contact, as HubSpot's QuickBooks actions
    assert found["contact"]["emails"]["primaryEmail"] == "maya@acme.example"
    assert [c["id"] for c in found["contacts"]] == [ids["first"], ids["second"]]
    assert found["line_items"] == [
        {"name": "Robot arm", "sku": "ARM-7", "quantity": "2", "unit_price": "12500.00", "currency": "EUR",
         "discount_percent": None, "discount_amount": "250", "taxable": True, "description": "7-axis",
         "term": None},
        {"name": "Support", "sku": None, "quantity": "12", "unit_price": "49.90", "currency": "EUR",
         "discount_percent": "15", "discount_amount": None, "taxable": False, "description": None,
         "term": "P12M"},
    ]
    assert hubspot.violations == []


def test_the_first_associated_contact_is_the_first_in_hubspots_order(
    hubspot: FakeHubSpot, crm: HubSpotConnector,
) -> None:
    late = hubspot.add("contact", {"firstname": "Zed", "email": "zed@x.example"})
    early = hubspot.add("contact", {"firstname": "Amy", "email": "amy@x.example"})
    deal = hubspot.add("deal", {"dealname": "Two", "amount": "1"}, associations={"contact": [late, early]})
    assert crm.lookup(hubspot.connection(), "deal", {"id": deal})["contact"]["id"] == late


def test_a_deal_hubspot_no_longer_has_reads_as_none(hubspot: FakeHubSpot, crm: HubSpotConnector) -> None:
    assert crm.get_record(hubspot.connection(), "deal", "999999") is None
    assert crm.lookup(hubspot.connection(), "deal", {"id": "999999"})["record"] is None


def test_write_back_patches_the_deal_and_company_with_string_properties(
    hubspot: FakeHubSpot, crm: HubSpotConnector,
) -> None:
    ids = a_deal(hubspot)
    crm.update_record(hubspot.connection(), "deal", ids["deal"], {"invoice_id": "in_123"})
    crm.update_record(hubspot.connection(), "company", ids["company"], {"stripe_customer_id": "cus_9"})
    assert hubspot.patched("deal", ids["deal"]) == {"invoice_id": "in_123"}
    assert hubspot.patched("company", ids["company"]) == {"stripe_customer_id": "cus_9"}
    assert [r.path for r in hubspot.requests if r.method == "PATCH"] == [
        f"/crm/v3/objects/deals/{ids['deal']}", f"/crm/v3/objects/companies/{ids['company']}"]
    assert hubspot.violations == []


def test_a_payment_that_paid_an_invoice_says_so(hubspot: FakeHubSpot, crm: HubSpotConnector) -> None:
    invoice = hubspot.add("invoice", {"hs_number": "INV-1", "hs_amount_billed": "10", "hs_currency": "USD"})
    paid_invoice = hubspot.add("commerce_payment", {"hs_initial_amount": "10"}, associations={"invoice": [invoice]})
    own = hubspot.add("commerce_payment", {"hs_initial_amount": "10", "hs_payment_source": "PAYMENT_LINK"})
    connection = hubspot.connection()
    assert crm.lookup(connection, "commerce_payment", {"id": paid_invoice})["record"]["paid_invoice"] is True
    assert crm.lookup(connection, "commerce_payment", {"id": own})["record"]["paid_invoice"] is False


def test_search_pages_within_200_a_page_and_5_requests_a_second(
    hubspot: FakeHubSpot, crm: HubSpotConnector, clock: FakeClock,
) -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    for n in range(1, 1001):
        hubspot.add("deal", {"dealname": f"D{n}", "dealstage": "closedwon" if n % 2 else "appointmentscheduled"},
                    modified_at=start + timedelta(minutes=n))
    query = RecordQuery("deal", (RecordFilter("dealstage", "eq", "closedwon"),), start, start + timedelta(days=1),
                        page_size=500)
    found = list(iter_records(crm, hubspot.connection(), query))

    assert len(found) == 500 and len({r["id"] for r in found}) == 500
    searches = [r for r in hubspot.requests if r.path.endswith("/search")]
    assert len(searches) == 3 and all(r.json()["limit"] == 200 for r in searches)
    assert clock.slept == 0  # three calls fit in a second
    assert hubspot.violations == []


def test_a_burst_of_searches_is_throttled_to_5_a_second(
    hubspot: FakeHubSpot, crm: HubSpotConnector, clock: FakeClock,
) -> None:
    hubspot.add("deal", {"dealname": "only"})
    for _ in range(12):
        crm.search_records(hubspot.connection(), RecordQuery("deal"))
    assert hubspot.violations == []  # the stand-in answers 429 (and records it) past 5 in a second
    assert clock.slept >= 2.0


def test_a_429_from_searches_elsewhere_is_waited_out(hubspot: FakeHubSpot, crm: HubSpotConnector,
                                                      clock: FakeClock) -> None:
    hubspot.add("deal", {"dealname": "only"})
    hubspot.search_calls.extend([clock.now] * 5)  # another process used this second's budget
    page = crm.search_records(hubspot.connection(), RecordQuery("deal"))
    assert [r["name"] for r in page.records] == ["only"]
    assert clock.slept >= 1.0
    hubspot.violations.clear()  # the one 429 was the point of the test


def test_a_window_over_10000_results_is_read_whole_in_slices_hubspot_accepts(
    hubspot: FakeHubSpot, crm: HubSpotConnector,
) -> None:
    start = datetime(2026, 10, 1, tzinfo=UTC)
    for n in range(10_050):
        hubspot.add("deal", {"dealname": f"D{n}"}, modified_at=start + timedelta(seconds=n))
    query = RecordQuery("deal", (), start, start + timedelta(seconds=10_050), page_size=200)

    found = list(iter_records(crm, hubspot.connection(), query, max_records=20_000))

    assert len({r["id"] for r in found}) == 10_050
    assert len(found) <= 10_051  # at most the record of the millisecond where the slice ended, twice
    assert hubspot.violations == []  # never paged past 10,000 in one query
    restarted = [r.json() for r in hubspot.requests if r.path.endswith("/search") and r.json()["after"] == "0"]
    assert len(restarted) == 2  # the first query, and the one that goes on from where it reached


def test_oauth_connections_refresh_their_token_and_private_apps_use_theirs(
    hubspot: FakeHubSpot, crm: HubSpotConnector,
) -> None:
    deal = hubspot.add("deal", {"dealname": "tokens"})
    oauth = hubspot.connection(oauth=True)
    assert crm.get_record(oauth, "deal", deal)["name"] == "tokens"
    assert crm.get_record(oauth, "deal", deal)["name"] == "tokens"
    assert hubspot.refreshes == 1
    token = hubspot.requests[0]
    assert token.path == "/oauth/v1/token" and b"client_secret=" in token.body  # in the form, not Basic
    report = crm.test_connection(hubspot.connection(), "acme")
    assert report.ok and report.checked == "GET /crm/v3/objects/deals?limit=1" and report.account_id == "62515"
    assert hubspot.violations == []



def test_a_record_read_again_carries_the_properties_its_rule_reads(hubspot: FakeHubSpot, crm: HubSpotConnector) -> None:
    # HubSpot answers only the properties asked for: a portal's own property a rule reads is asked for by name,
    # without listing it in the connection; names HubSpot does not have (billflow's derived ones) are ignored.
    hubspot.add_property("deal", "renewal_date", type="date")
    deal = hubspot.add("deal", {"dealname": "Renewal", "amount": "120", "renewal_date": "2027-03-05"})
    assert "renewal_date" not in crm.get_record(hubspot.connection(), "deal", deal)  # type: ignore[operator]
    record = crm.get_record(hubspot.connection(), "deal", deal, fields=["renewal_date", "amount.amountMicros", "name"])
    assert record is not None and record["renewal_date"] == "2027-03-05" and record["name"] == "Renewal"
    assert record["amount"]["amountMicros"] == 120_000_000
    # The sweep's and date rules' searches too: the fields the caller reads are asked for beside the filtered ones.
    page = crm.search_records(hubspot.connection(), RecordQuery("deal", fields=("renewal_date", "invoice_ref.id")))
    assert [r["renewal_date"] for r in page.records] == ["2027-03-05"]
    asked = hubspot.requests[-1].json()["properties"]
    assert "renewal_date" in asked and "invoice_ref" in asked and "invoice_ref.id" not in asked
