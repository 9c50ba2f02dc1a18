"""The local runtime with contract-checked fakes around it: what a user runs, with Stripe and Twenty
played by local servers that check every request against the official contracts."""

from __future__ import annotations

import copy
import json
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from billflow_local.receiver import SignedWebhookReceiver
from billflow_local.runtime import LocalRuntime
from tests.fakes.signing import signed_twenty_delivery
from tests.fakes.stripe_server import FakeStripe
from tests.fakes.twenty_server import FakeTwenty, load_sample_workspace

ROOT = Path(__file__).resolve().parents[2]
TENANT = "acme"
SIGNING_SECRET = "e2e-twenty-signing-secret"
HOOK_SECRET = "e2eFinanceHookSecret42"
WON_EVENT = json.loads((ROOT / "events" / "twenty" / "opportunity-won.json").read_text())


@dataclass
class Stack:
    runtime: LocalRuntime
    stripe: FakeStripe
    twenty: FakeTwenty
    receiver: SignedWebhookReceiver

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            f"{self.runtime.url}/webhooks/{TENANT}/twenty", data=body, method="POST",
            headers={"Content-Type": "application/json", **headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def post_signed(self, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        headers, body = signed_twenty_delivery(SIGNING_SECRET, event)
        return self.post(body, headers)

    def new_opportunity(self, stage: str = "CUSTOMER", **changes: Any) -> dict[str, Any]:
        """A won event for a fresh opportunity the fake Twenty holds, so tests never share records."""
        event = copy.deepcopy(WON_EVENT)
        record = event["record"]
        record["id"] = str(uuid.uuid4())
        record["stage"] = stage
        record.update(changes)
        self.twenty.add_record("opportunity", dict(record))
        return event

    def invoices_for(self, record_id: str) -> list[dict[str, Any]]:
        return [i for i in self.stripe.invoices.values() if i["metadata"].get("crm_record_id") == record_id]

    def executions_for(self, record_id: str) -> list[dict[str, Any]]:
        runs = self.runtime.executions()
        return [e for e in runs if (e["input"] or {}).get("event", {}).get("record_id") == record_id]


def concurrently(count: int, work: Any) -> list[Any]:
    results: list[Any] = [None] * count
    start = threading.Barrier(count)

    def run(i: int) -> None:
        start.wait()
        results[i] = work()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack() as started:
        yield started


@contextmanager
def running_stack(rules: Path = ROOT / "examples" / "rules", **twenty_settings: Any) -> Iterator[Stack]:
    """The local runtime with the rules folder, Stripe, Twenty (its connection with twenty_settings too) and
    the finance webhook's receiver."""
    stripe = FakeStripe().start()
    twenty = FakeTwenty(custom_fields={"opportunity": {"invoiceId": {"type": "string"}}}).start()
    twenty.seed(load_sample_workspace())
    receiver = SignedWebhookReceiver(HOOK_SECRET).start()
    connections = {"tenants": {TENANT: {
        "sources": {"twenty": {"signing_secret": SIGNING_SECRET}},
        "connections": {
            "twenty": {**twenty.connection_settings(), **twenty_settings},
            "stripe-main": {"type": "stripe", "base_url": stripe.url, "api_key": stripe.api_key},
            "finance-webhook": {"type": "webhook", "url": f"{receiver.url}/hooks/finance", "secret": HOOK_SECRET},
        },
        "settings": {"daily_limits": {"invoice": 500, "webhook": 500}},
    }}}
    runtime = LocalRuntime(ROOT, port=0, rules=rules, connections=connections, tenant=TENANT, echo=None,
                           fast_retries=True)
    runtime.start()
    try:
        yield Stack(runtime, stripe, twenty, receiver)
    finally:
        runtime.stop()
        for server in (stripe, twenty, receiver):
            server.stop()
