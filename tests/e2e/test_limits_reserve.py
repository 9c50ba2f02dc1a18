"""Issue 8 §4 on the local runtime (the real ASL on moto): daily limits count what was sent.

Each test has its own tenant (its own counters) on one runtime, and its own deals; Stripe and Twenty are
contract-checked local servers. The counter item is read back from the counters table to show that what was
sent is exactly what was counted, and that no reservation is left behind.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from billflow.storage import keys
from billflow.storage.day_counters import HOLD_PREFIX, CounterStore, DayCounter

from billflow_local.runtime import LocalRuntime, load_rules
from tests.fakes.signing import post_stage_change
from tests.fakes.stripe_server import FakeStripe
from tests.fakes.twenty_server import FakeTwenty

ROOT = Path(__file__).resolve().parents[2]
SECRET = "limits-reserve-secret"
LIMITS = {"outage": 5, "rush": 50, "crash": 1}

RULE = """\
id: invoice-won
source: twenty
object: opportunity
trigger: {type: event, on: edited}
criteria:
  - {field: stage, comparator: changed_to, value: CUSTOMER}
actions:
  - type: stripe.invoice
    connection: stripe-main
    options: {days_until_due: 30, description: "{{ record.name }}"}
"""


@dataclass
class Stack:
    runtime: LocalRuntime
    stripe: FakeStripe
    twenty: FakeTwenty

    def win(self, tenant: str, name: str) -> str:
        """A deal moved to CUSTOMER in Twenty, and its signed webhook: the record id."""
        deal = self.twenty.add_opportunity(name, id=str(uuid.uuid4()), amount_micros=1_000_000_000,
                                           stage="CUSTOMER")
        assert post_stage_change(self.runtime.url, tenant, SECRET, deal, timeout=30) == 202
        return str(deal["id"])

    def invoiced(self, record_ids: set[str]) -> list[str]:
        """The records Stripe holds an invoice for, one entry per invoice."""
        return [i["metadata"]["crm_record_id"] for i in self.stripe.invoices.values()
                if i["metadata"].get("crm_record_id") in record_ids]

    def runs(self, record_ids: set[str]) -> list[dict[str, Any]]:
        return [r for r in self.runtime.executions() if r["input"]["event"]["record_id"] in record_ids]

    def counter(self, tenant: str) -> DayCounter:
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        return CounterStore(self.runtime.name_of("CountersTable")).read(keys.counter_pk(tenant, "invoice", day))

    def replay(self, tenant: str, name: str) -> dict[str, Any]:
        request = urllib.request.Request(f"{self.runtime.url}/admin/tenants/{tenant}/executions/{name}/replay",
                                         data=b"{}", method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                result: dict[str, Any] = json.loads(answer.read())
                return result
        except urllib.error.HTTPError as err:
            raise AssertionError(f"replay {name}: {err.code} {err.read()!r}") from None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stripe = FakeStripe().start()
    twenty = FakeTwenty().start()
    rule_file = tmp_path_factory.mktemp("reserve") / "rules.yaml"
    rule_file.write_text(RULE)
    connections = {"tenants": {tenant: {
        "sources": {"twenty": {"signing_secret": SECRET}},
        "connections": {"twenty": twenty.connection_settings(),
                        "stripe-main": {"type": "stripe", "base_url": stripe.url, "api_key": stripe.api_key}},
        "settings": {"daily_limits": {"invoice": limit}},
    } for tenant, limit in LIMITS.items()}}
    runtime = LocalRuntime(ROOT, port=0, connections=connections, tenant="outage", echo=None, fast_retries=True)
    runtime.start()
    try:
        for tenant in LIMITS:
            runtime.put_rules(load_rules(rule_file, tenant))
        yield Stack(runtime, stripe, twenty)
    finally:
        runtime.stop()
        stripe.stop()
        twenty.stop()


def test_after_an_outage_replays_invoice_exactly_the_limit(stack: Stack) -> None:
    """Limit 5, eight deals won while Stripe is down: the failed sends give their places back, so the
    replays invoice exactly five (before: the outage used up the day's five and every replay was limited)."""
    stack.stripe.fail_next("PostInvoices", 503, times=10_000)
    with ThreadPoolExecutor(8) as pool:
        deals = set(pool.map(lambda i: stack.win("outage", f"Outage {i}"), range(8)))
    stack.runtime.wait_idle(90)
    first = stack.runs(deals)
    assert len(first) == 8 and {r["status"] for r in first} == {"FAILED"}
    assert stack.invoiced(deals) == []
    during = stack.counter("outage")
    assert (during.count, during.sent, during.holds) == (0, 0, {})  # nothing sent, nothing held

    stack.stripe.reset()  # Stripe is back
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda run: stack.replay("outage", run["name"]), first))
    stack.runtime.wait_idle(90)

    invoiced = stack.invoiced(deals)
    assert len(invoiced) == 5 and len(set(invoiced)) == 5
    replays = [r for r in stack.runs(deals) if r["name"].endswith("-r1")]
    assert sorted((r["status"], r["error"]) for r in replays) == (
        [("FAILED", "DailyLimitReached")] * 3 + [("SUCCEEDED", None)] * 5)
    after = stack.counter("outage")
    assert (after.count, after.sent, after.holds) == (5, 5, {})
    assert stack.stripe.violations == []


def test_120_deals_racing_for_a_limit_of_50_make_exactly_50_invoices(stack: Stack) -> None:
    started = time.monotonic()
    with ThreadPoolExecutor(24) as pool:
        deals = set(pool.map(lambda i: stack.win("rush", f"Rush {i}"), range(120)))
    stack.runtime.wait_idle(120)
    elapsed = time.monotonic() - started

    invoiced = stack.invoiced(deals)
    assert len(invoiced) == 50 and len(set(invoiced)) == 50
    outcomes = [(r["status"], r["error"]) for r in stack.runs(deals)]
    assert outcomes.count(("SUCCEEDED", None)) == 50
    assert outcomes.count(("FAILED", "DailyLimitReached")) == 70
    counter = stack.counter("rush")
    assert (counter.count, counter.sent, counter.holds) == (50, 50, {})
    print(f"120 deals against a limit of 50: {elapsed:.1f} s")  # the figure for the report (-s)


def test_a_run_stopped_between_reserve_and_commit_gives_its_place_back_when_its_lease_ends(stack: Stack) -> None:
    """Limit 1. A run waits on Stripe's Retry-After and is stopped there (StopExecution runs no Catch):
    its hold stays and, while its lease lasts, the next deal is limited; once the lease has ended, the
    next deal reclaims the place and is invoiced."""
    stack.stripe.fail_next("PostInvoices", 429, times=1, retry_after=3600)
    stopped = stack.win("crash", "Crash stopped")
    stack.runtime.wait_idle(60, include_waiting=False)
    [run] = stack.runs({stopped})
    assert run["states"][-1] == "WaitRetryAfter"
    stack.runtime.client("stepfunctions").stop_execution(executionArn=run["arn"], error="Stopped",
                                                         cause="an admin stopped it")
    stack.runtime.wait_idle(30)
    [hold] = stack.counter("crash").holds
    assert hold.startswith(f"{HOLD_PREFIX}{run['name']}#")

    limited = stack.win("crash", "Crash limited")
    stack.runtime.wait_idle(60)
    [limited_run] = stack.runs({limited})
    assert (limited_run["status"], limited_run["error"]) == ("FAILED", "DailyLimitReached")
    assert "Settle" in limited_run["states"]  # the live hold was looked at, and kept

    # The lease ends: only the clock is moved (the hold's end written into the past), nothing else.
    table = stack.runtime.name_of("CountersTable")
    pk = stack.counter("crash").pk
    stack.runtime.client("dynamodb").update_item(
        TableName=table, Key={"pk": {"S": pk}}, UpdateExpression="SET #hold = :past",
        ExpressionAttributeNames={"#hold": hold}, ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 1)}})
    reclaimed = stack.win("crash", "Crash reclaimed")
    stack.runtime.wait_idle(60)

    [reclaimed_run] = stack.runs({reclaimed})
    assert reclaimed_run["status"] == "SUCCEEDED"
    assert stack.invoiced({stopped, limited, reclaimed}) == [reclaimed]
    counter = stack.counter("crash")
    assert (counter.count, counter.sent, counter.holds) == (1, 1, {})
