"""Issue 11 across CRMs in one deployment: a HubSpot tenant and a Twenty tenant on the same local runtime, each
with its own CRM, Stripe account, signing secret, rules and daily limit.

HubSpot: signed batches (v3, signed by an independent implementation of HubSpot's recipe) with duplicates and
out-of-order events make one invoice per deal with the deal's line items as lines and the first associated
contact as the customer; one deal's webhook is dropped on purpose and the reconciliation sweep (`billflow
sweep`, HubSpot's search API) invoices it, and nothing twice. Nothing of one tenant reaches the other.
"""

from __future__ import annotations

import copy
import json
import random
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from billflow_cli.main import main as billflow
from billflow_local.config import load_rules
from billflow_local.runtime import LocalRuntime
from billflow_local.standins.hubspot_server import FakeHubSpot
from billflow_local.standins.stripe_server import FakeStripe
from billflow_local.standins.twenty_server import FakeTwenty
from tests.fakes.hubspot_signing import creation, hubspot_body, property_change, v3_headers
from tests.fakes.signing import signed_twenty_delivery

ROOT = Path(__file__).resolve().parents[2]
HS, TW = "mixed-hubspot", "mixed-twenty"
HS_SECRET, TW_SECRET = "5d1e0c2b-hubspot-client-secret", "mixed-twenty-signing-secret"
HS_RULE, TW_RULE = "hubspot-deal-won-to-stripe", "twenty-won-to-stripe"
TW_WON = json.loads((ROOT / "events" / "twenty" / "opportunity-won.json").read_text())
TWENTY_RULES = """
id: twenty-won-to-stripe
source: twenty
object: opportunity
trigger: {type: event, on: edited, when: every_edit}
criteria:
  - {field: stage, comparator: changed_to, value: CUSTOMER}
actions:
  - type: stripe.invoice
    connection: stripe-main
    write_back_field: invoiceId
    options: {days_until_due: 30, description: "{{ record.name }}"}
"""


@dataclass
class Stack:
    runtime: LocalRuntime
    hubspot: FakeHubSpot
    twenty: FakeTwenty
    hs_stripe: FakeStripe
    tw_stripe: FakeStripe
    event_ids: Iterator[int]

    def post(self, tenant: str, source: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(f"{self.runtime.url}/webhooks/{tenant}/{source}", data=body, method="POST",
                                         headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def post_hubspot(self, events: list[dict[str, Any]], tenant: str = HS,
                     secret: str = HS_SECRET) -> tuple[int, dict[str, Any]]:
        body = hubspot_body(events)
        # What API Gateway hands the ingest: https://<Host><rawPath> (locally the Host is 127.0.0.1:<port>).
        url = self.runtime.url.replace("http://", "https://") + f"/webhooks/{tenant}/hubspot"
        return self.post(tenant, "hubspot", body, v3_headers(secret, "POST", url, body))

    def post_twenty(self, event: dict[str, Any], tenant: str = TW,
                    secret: str = TW_SECRET) -> tuple[int, dict[str, Any]]:
        headers, body = signed_twenty_delivery(secret, event)
        return self.post(tenant, "twenty", body, headers)

    def deal_with_lines(self, n: int) -> str:
        """A won deal with a company, two contacts (the first is billed) and two line items."""
        hs = self.hubspot
        company = hs.add("company", {"name": f"Mixed {n} SA", "address": "1 Rue", "city": "Lyon", "zip": "69001",
                                     "country": "France"})
        contacts = [hs.add("contact", {"firstname": name, "lastname": f"M{n}",
                                       "email": f"{name.lower()}{n}@mixed.example"}) for name in ("Ada", "Bob")]
        lines = [hs.add("line_item", {"name": f"Robot {n}", "hs_sku": f"R-{n}", "quantity": "2", "price": "100.25",
                                      "hs_line_item_currency_code": "EUR", "hs_position_on_quote": "0"}),
                 hs.add("line_item", {"name": f"Setup {n}", "hs_sku": f"S-{n}", "quantity": "1", "price": "49.50",
                                      "hs_line_item_currency_code": "EUR", "hs_position_on_quote": "1"})]
        return hs.add("deal", {"dealname": f"Mixed deal {n}", "amount": "250.00", "deal_currency_code": "EUR",
                               "dealstage": "closedwon"},
                      associations={"company": [company], "contact": contacts, "line_item": lines})

    def won_opportunity(self) -> dict[str, Any]:
        event = copy.deepcopy(TW_WON)
        event["record"]["id"] = str(uuid.uuid4())
        event["record"]["stage"] = "CUSTOMER"
        self.twenty.add_record("opportunity", dict(event["record"]))
        return event

    def invoices(self, stripe: FakeStripe, record_id: str) -> list[dict[str, Any]]:
        return [i for i in stripe.invoices.values() if i["metadata"].get("crm_record_id") == record_id]

    def runs(self, tenant: str) -> list[dict[str, Any]]:
        return [e for e in self.runtime.executions() if (e["input"] or {}).get("tenant") == tenant]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("mixed")
    (folder / "twenty.yaml").write_text(TWENTY_RULES)
    with FakeHubSpot(token="pat-na1-mixed-hubspot") as hubspot, \
            FakeTwenty(api_key="mixed-twenty-api-key",
                       custom_fields={"opportunity": {"invoiceId": {"type": "string"}}}) as twenty, \
            FakeStripe(api_key="sk_test_mixed_hubspot") as hs_stripe, \
            FakeStripe(api_key="sk_test_mixed_twenty") as tw_stripe:
        connections = {"tenants": {
            HS: {"sources": {"hubspot": {"signing_secret": HS_SECRET, "portal_ids": [hubspot.portal_id]}},
                 "connections": {"hubspot": hubspot.connection_settings(),
                                 "stripe-main": {"type": "stripe", "base_url": hs_stripe.url,
                                                 "api_key": hs_stripe.api_key}},
                 "settings": {"daily_limits": {"invoice": 3}}},
            TW: {"sources": {"twenty": {"signing_secret": TW_SECRET}},
                 "connections": {"twenty": twenty.connection_settings(),
                                 "stripe-main": {"type": "stripe", "base_url": tw_stripe.url,
                                                 "api_key": tw_stripe.api_key}},
                 "settings": {"daily_limits": {"invoice": 1}}},
        }}
        with LocalRuntime(ROOT, port=0, connections=connections, tenant=HS, echo=None, fast_retries=True,
                          rules=ROOT / "examples" / "hubspot") as runtime:
            runtime.put_rules(load_rules(folder / "twenty.yaml", TW))
            yield Stack(runtime, hubspot, twenty, hs_stripe, tw_stripe, iter(range(90_000, 1_000_000)))


def test_hubspot_batches_with_a_dropped_webhook_and_a_twenty_tenant_beside_never_mix(
    stack: Stack, capsys: pytest.CaptureFixture[str],
) -> None:
    # The Twenty tenant first: two won opportunities against its daily limit of 1.
    opportunities = [stack.won_opportunity() for _ in range(2)]
    for event in opportunities:
        assert stack.post_twenty(event)[0] == 202
    stack.runtime.wait_idle(60)
    # Each tenant's secret at the other's address: refused.
    assert stack.post_twenty(stack.won_opportunity(), secret=HS_SECRET)[0] == 401
    assert stack.post_twenty(stack.won_opportunity(), tenant=HS)[0] == 401  # no Twenty source there
    assert stack.post_hubspot([property_change(1, "dealstage", "closedwon", event_id=next(stack.event_ids),
                                               occurred_at=int(time.time() * 1000))], secret=TW_SECRET)[0] == 401

    # HubSpot: three won deals with line items; deal 3's webhooks are never delivered.
    deals = [stack.deal_with_lines(n) for n in range(3)]
    *delivered, dropped = deals
    now = int(time.time() * 1000)
    events = []
    for deal in delivered:
        won = property_change(int(deal), "dealstage", "closedwon", event_id=next(stack.event_ids),
                              occurred_at=now - 3000)
        events += [
            creation(int(deal), event_id=next(stack.event_ids), occurred_at=now - 20_000),
            property_change(int(deal), "amount", "1.00", event_id=next(stack.event_ids), occurred_at=now - 9000),
            won, dict(won, attemptNumber=1),  # HubSpot's retry of one event: same eventId
            property_change(int(deal), "dealname", "renamed", event_id=next(stack.event_ids), occurred_at=now - 1000),
        ]
    random.Random(12).shuffle(events)
    first = stack.post_hubspot(events)
    again = stack.post_hubspot(list(reversed(events)))  # the whole batch again, in another order
    stack.runtime.wait_idle(90)
    assert first[0] == 202 and again[0] == 202
    assert stack.invoices(stack.hs_stripe, dropped) == []

    capsys.readouterr()
    sweep = ["sweep", "--api", stack.runtime.url, "--tenant", HS, "--rule", HS_RULE, "--since", "1h", "--json"]
    assert billflow(sweep) == 0
    report = json.loads(capsys.readouterr().out)
    stack.runtime.wait_idle(90)
    assert billflow(sweep) == 0  # again: every deal has its invoice id written back now
    again_report = json.loads(capsys.readouterr().out)
    stack.runtime.wait_idle(90)

    assert report["fed"] == [dropped] and len(report["started"]) == 1
    assert again_report["fed"] == [] and set(again_report["documented"]) == set(deals)
    # The dropped deal's webhook turns up after all (HubSpot's tenth retry): still one invoice.
    late = property_change(int(dropped), "dealstage", "closedwon", event_id=next(stack.event_ids), occurred_at=now)
    assert stack.post_hubspot([late, late])[0] == 202
    stack.runtime.wait_idle(90)
    for n, deal in enumerate(deals):
        [invoice] = stack.invoices(stack.hs_stripe, deal)
        lines = stack.hs_stripe.items_of(invoice["id"])
        assert sorted((i["amount"], i["currency"]) for i in lines) == [(4_950, "eur"), (20_050, "eur")]
        described = " ".join(str(i.get("description") or "") for i in lines)
        assert f"Robot {n}" in described and f"Setup {n}" in described
        customer = stack.hs_stripe.customers[invoice["customer"]]
        assert customer["email"] == f"ada{n}@mixed.example"  # the first associated contact
        assert stack.hubspot.patched("deal", deal) == {"invoice_id": invoice["id"]}
    [swept_run] = [r for r in stack.runs(HS) if r["input"]["event"]["record_id"] == dropped]
    assert swept_run["status"] == "SUCCEEDED"
    # The scheduled sweep (the example rule's `sweep: {every: 1h}`) finds every deal documented.
    # (Its window ends at the schedule's time, to the second: a minute on, it holds the write-backs just made.)
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    scheduled = stack.runtime.invoke("SweepFunction", {"kind": "due", "time": at})
    [hs_sweep] = [r for r in scheduled["swept"] if r["tenant"] == HS]
    assert hs_sweep["rule_id"] == HS_RULE and hs_sweep["fed"] == [] and set(deals) <= set(hs_sweep["documented"])

    # Limits: HubSpot's 3 all sent (the Twenty tenant's send did not count against them); Twenty's limit of 1
    # held whatever HubSpot's tenant sent.
    tw_invoiced = [e for e in opportunities if stack.invoices(stack.tw_stripe, e["record"]["id"])]
    assert len(tw_invoiced) == 1
    # Rules, connections and secrets: each tenant's runs are its own rule's, its documents in its own Stripe,
    # its CRM calls to its own CRM with its own credentials.
    assert {r["input"]["rule"]["id"] for r in stack.runs(TW)} == {TW_RULE}
    assert {r["input"]["rule"]["id"] for r in stack.runs(HS)} == {HS_RULE}
    assert all(stack.invoices(stack.tw_stripe, d) == [] for d in deals)
    assert all(stack.invoices(stack.hs_stripe, e["record"]["id"]) == [] for e in opportunities)
    assert all(r.headers.get("authorization") == "Bearer pat-na1-mixed-hubspot" for r in stack.hubspot.requests)
    assert all(r.headers.get("authorization") == "Bearer mixed-twenty-api-key" for r in stack.twenty.requests)
    assert all(r.headers.get("authorization") == "Bearer sk_test_mixed_hubspot" for r in stack.hs_stripe.requests)
    assert all(r.headers.get("authorization") == "Bearer sk_test_mixed_twenty" for r in stack.tw_stripe.requests)
    for server in (stack.hubspot, stack.twenty, stack.hs_stripe, stack.tw_stripe):
        assert server.violations == [], (server.name, server.violations)
