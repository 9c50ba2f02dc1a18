"""HubSpot end to end on the local runtime: signed batches of app-webhook events (signed by an independent
implementation of HubSpot's v3 recipe) through ingest, the bus, the filter and the state machine, with the
HubSpot and Stripe stand-ins checking every call against the official contracts."""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from billflow.storage.execution_log import ExecutionLog

from billflow_local.runtime import LocalRuntime
from billflow_local.standins.hubspot_server import FakeHubSpot
from tests.fakes.hubspot_signing import creation, hubspot_body, property_change, v3_headers
from tests.fakes.stripe_server import FakeStripe

ROOT = Path(__file__).resolve().parents[2]
TENANT = "hs-acme"
CLIENT_SECRET = "7c0a9d4e-31f2-4b8e-9a65-c2d1e0f9b8a7"


@dataclass
class HubSpotStack:
    runtime: LocalRuntime
    stripe: FakeStripe
    hubspot: FakeHubSpot
    next_event: int = 1

    @property
    def webhook_url(self) -> str:
        # What API Gateway hands the ingest: https://<Host><rawPath> (locally the Host is 127.0.0.1:<port>).
        return self.runtime.url.replace("http://", "https://") + f"/webhooks/{TENANT}/hubspot"

    def post(self, events: list[dict[str, Any]], *, timestamp_ms: int | None = None,
             secret: str = CLIENT_SECRET) -> tuple[int, dict[str, Any]]:
        body = hubspot_body(events)
        headers = v3_headers(secret, "POST", self.webhook_url, body, timestamp_ms)
        request = urllib.request.Request(f"{self.runtime.url}/webhooks/{TENANT}/hubspot", data=body,
                                         method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def event_id(self) -> int:
        self.next_event += 1
        return self.next_event

    def won(self, deal: str, at: int) -> dict[str, Any]:
        return property_change(int(deal), "dealstage", "closedwon", event_id=self.event_id(), occurred_at=at)

    def invoices_for(self, record_id: str) -> list[dict[str, Any]]:
        return [i for i in self.stripe.invoices.values() if i["metadata"].get("crm_record_id") == record_id]

    def log_for(self, object_name: str, record_id: str) -> list[dict[str, Any]]:
        log = ExecutionLog(self.runtime.name_of("ExecutionLogTable"))
        return log.by_record(f"{TENANT}#hubspot#{object_name}#{record_id}")

    def customer_of(self, invoice: dict[str, Any]) -> dict[str, Any]:
        customer: dict[str, Any] = self.stripe.customers[invoice["customer"]]
        return customer


@pytest.fixture(scope="module")
def stack() -> Iterator[HubSpotStack]:
    stripe = FakeStripe().start()
    hubspot = FakeHubSpot().start()
    connections = {"tenants": {TENANT: {
        "sources": {"hubspot": {"signing_secret": CLIENT_SECRET, "portal_ids": [hubspot.portal_id]}},
        "connections": {
            "hubspot": hubspot.connection_settings(oauth=True),
            "stripe-main": {"type": "stripe", "base_url": stripe.url, "api_key": stripe.api_key},
        },
        "settings": {"daily_limits": {"invoice": 500}},
    }}}
    runtime = LocalRuntime(ROOT, port=0, rules=ROOT / "examples" / "hubspot", connections=connections,
                           tenant=TENANT, echo=None, fast_retries=True)
    runtime.start()
    try:
        yield HubSpotStack(runtime, stripe, hubspot)
    finally:
        runtime.stop()
        stripe.stop()
        hubspot.stop()


def a_customer(stack: HubSpotStack, name: str) -> tuple[str, list[str]]:
    """A company with two contacts, associated in that order (the first is the one billed)."""
    hs = stack.hubspot
    company = hs.add("company", {"name": name, "address": "1 Main St", "city": "Lyon", "zip": "69001",
                                 "country": "France"})
    first = hs.add("contact", {"firstname": "Ada", "lastname": name, "email": f"ada@{name.lower()}.example"})
    second = hs.add("contact", {"firstname": "Bob", "lastname": name, "email": f"bob@{name.lower()}.example"})
    return company, [first, second]


def test_batched_events_with_duplicates_out_of_order_make_one_invoice_per_deal(stack: HubSpotStack) -> None:
    hs = stack.hubspot
    deals = []
    for n, amount in enumerate(("1500.00", "980.25")):
        company, contacts = a_customer(stack, f"Batch{n}")
        deals.append(hs.add("deal", {"dealname": f"Deal {n}", "amount": amount, "deal_currency_code": "EUR",
                                     "dealstage": "closedwon"},
                            associations={"company": [company], "contact": contacts}))
    now = int(time.time() * 1000)
    events = []
    for deal in deals:
        won = stack.won(deal, now - 3000)
        events += [
            property_change(int(deal), "amount", "1.00", event_id=stack.event_id(), occurred_at=now - 9000),
            won, dict(won, attemptNumber=1),
            property_change(int(deal), "dealname", "renamed", event_id=stack.event_id(), occurred_at=now - 1000),
            creation(int(deal), event_id=stack.event_id(), occurred_at=now - 20_000),
        ]
    random.Random(11).shuffle(events)

    first = stack.post(events)
    again = stack.post(list(reversed(events)))  # HubSpot resends the batch (a timeout on its side)
    stack.runtime.wait_idle(90)

    assert first[0] == 202 and first[1]["accepted"] == 8 and "skipped" not in first[1]
    assert again[0] == 202
    for deal, cents in zip(deals, (150_000, 98_025), strict=True):
        [invoice] = stack.invoices_for(deal)
        [item] = stack.stripe.items_of(invoice["id"])
        assert (item["amount"], item["currency"]) == (cents, "eur")
        assert stack.customer_of(invoice)["email"].startswith("ada@")  # the first associated contact
        assert hs.patched("deal", deal) == {"invoice_id": invoice["id"]}
    assert stack.stripe.violations == [] and hs.violations == []


def test_an_invalid_event_in_a_batch_is_logged_and_the_batch_still_answered_2xx(stack: HubSpotStack) -> None:
    company, contacts = a_customer(stack, "Mixed")
    deal = stack.hubspot.add("deal", {"dealname": "Mixed", "amount": "10", "deal_currency_code": "USD",
                                      "dealstage": "closedwon"},
                             associations={"company": [company], "contact": contacts})
    now = int(time.time() * 1000)
    bad = {"eventId": stack.event_id(), "subscriptionType": "deal.propertyChange", "portalId": 62515}

    status, answer = stack.post([bad, stack.won(deal, now)])
    stack.runtime.wait_idle(60)

    assert status == 202 and answer["accepted"] == 1
    [skipped] = answer["skipped"]
    assert skipped["index"] == 0 and "objectId" in skipped["reason"]
    assert len(stack.invoices_for(deal)) == 1


def test_a_stale_or_wrongly_signed_batch_is_refused_with_401_json(stack: HubSpotStack) -> None:
    now = int(time.time() * 1000)
    events = [stack.won("1", now)]
    status, answer = stack.post(events, timestamp_ms=now - 6 * 60 * 1000)
    assert status == 401 and "stale" in answer["message"]
    status, answer = stack.post(events, secret="not-the-client-secret")
    assert status == 401 and answer["error"] == "Unauthorized"


def test_a_paid_quote_is_invoiced_once(stack: HubSpotStack) -> None:
    company, contacts = a_customer(stack, "Quoted")
    quote = stack.hubspot.add("quote", {"hs_title": "Q-1", "hs_quote_amount": "420.00", "hs_currency": "USD",
                                        "hs_payment_status": "PAID"},
                              associations={"company": [company], "contact": contacts})
    paid = property_change(int(quote), "hs_payment_status", "PAID", event_id=stack.event_id(),
                           occurred_at=int(time.time() * 1000), subscription="object.propertyChange",
                           objectTypeId="0-14")
    stack.post([paid, paid])
    stack.runtime.wait_idle(60)

    [invoice] = stack.invoices_for(quote)
    [item] = stack.stripe.items_of(invoice["id"])
    assert (item["amount"], item["currency"]) == (42_000, "usd")
    assert stack.hubspot.violations == []


def test_a_quote_whose_e_signature_completed_is_invoiced(stack: HubSpotStack) -> None:
    company, contacts = a_customer(stack, "Signed")
    quote = stack.hubspot.add("quote", {"hs_title": "Q-2", "hs_quote_amount": "99.90", "hs_currency": "USD"},
                              associations={"company": [company], "contact": contacts})
    signed = property_change(int(quote), "hs_esign_date", "1780000000000", event_id=stack.event_id(),
                             occurred_at=int(time.time() * 1000), subscription="object.propertyChange",
                             objectTypeId="0-14")
    stack.post([signed])
    stack.runtime.wait_idle(60)

    [invoice] = stack.invoices_for(quote)
    assert stack.customer_of(invoice)["email"] == "ada@signed.example"


def test_a_payment_is_invoiced_and_a_payment_of_an_invoice_is_not(stack: HubSpotStack) -> None:
    hs = stack.hubspot
    company, contacts = a_customer(stack, "Payer")
    paid_online = hs.add("commerce_payment", {"hs_initial_amount": "75.00", "hs_currency_code": "USD",
                                              "hs_latest_status": "succeeded", "hs_reference_number": "P-1"},
                         associations={"company": [company], "contact": contacts})
    invoice = hs.add("invoice", {"hs_number": "INV-9", "hs_amount_billed": "75.00", "hs_currency": "USD"})
    paid_an_invoice = hs.add("commerce_payment", {"hs_initial_amount": "75.00", "hs_currency_code": "USD",
                                                  "hs_latest_status": "succeeded", "hs_reference_number": "P-2"},
                             associations={"company": [company], "contact": contacts, "invoice": [invoice]})
    now = int(time.time() * 1000)
    events = [property_change(int(p), "hs_latest_status", "succeeded", event_id=stack.event_id(), occurred_at=now,
                              subscription="object.propertyChange", objectTypeId="0-101")
              for p in (paid_online, paid_an_invoice)]

    status, _ = stack.post(events)
    stack.runtime.wait_idle(60)

    assert status == 202
    assert len(stack.invoices_for(paid_online)) == 1
    assert stack.invoices_for(paid_an_invoice) == []
    statuses = {(i["step"], i["status"]) for i in stack.log_for("commerce_payment", paid_an_invoice)}
    assert ("run", "not_matched") in statuses


def test_a_won_deal_is_invoiced_with_its_line_items_as_lines(stack: HubSpotStack) -> None:
    hs = stack.hubspot
    company, contacts = a_customer(stack, "Lines")
    widget = hs.add("line_item", {"name": "Widget", "hs_sku": "W-1", "quantity": "3", "price": "10.50",
                                  "hs_line_item_currency_code": "EUR", "hs_position_on_quote": "0"})
    setup = hs.add("line_item", {"name": "Setup", "hs_sku": "S-1", "quantity": "1", "price": "99.00",
                                 "hs_line_item_currency_code": "EUR", "hs_position_on_quote": "1"})
    deal = hs.add("deal", {"dealname": "With lines", "amount": "130.50", "deal_currency_code": "EUR",
                           "dealstage": "closedwon"},
                  associations={"company": [company], "contact": contacts, "line_item": [widget, setup]})

    stack.post([stack.won(deal, int(time.time() * 1000))])
    stack.runtime.wait_idle(60)

    [invoice] = stack.invoices_for(deal)
    items = stack.stripe.items_of(invoice["id"])
    assert len(items) == 2
    assert sum(int(i["amount"]) for i in items) == 13_050
    described = " ".join(str(i.get("description") or "") for i in items)
    assert "Widget" in described and "Setup" in described
