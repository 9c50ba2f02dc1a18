"""Pipedrive through the generic source, the reconciliation sweep and ask-the-CRM, end to end on the local
runtime: real-shaped Pipedrive webhooks v2 (events/pipedrive/) with HTTP Basic credentials, lookups and
write-back against a Pipedrive API v2 stand-in, documents in a Stripe stand-in.

One deployment serves two tenants (acme, globex), each with its own Pipedrive, Stripe, credentials, rules and
daily limits: nothing of one ever reaches the other.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from billflow_cli.main import main as billflow
from billflow_local.config import load_rules
from billflow_local.runtime import LocalRuntime
from billflow_local.standins.pipedrive_server import FakePipedrive, pipedrive_time
from billflow_local.standins.stripe_server import FakeStripe

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "examples" / "pipedrive" / "rules"
RULE_ID = "pipedrive-won-to-stripe"
INVOICE_FIELD = "c1a2b3d4e5f60718293a4b5c6d7e8f9012345678"
WON = json.loads((ROOT / "events" / "pipedrive" / "deal-won.json").read_text())
_ids = itertools.count(6000)


@dataclass
class Tenant:
    name: str
    credentials: str  # "user:password" Pipedrive sends with its webhooks
    pipedrive: FakePipedrive
    stripe: FakeStripe


@dataclass
class Stack:
    runtime: LocalRuntime
    acme: Tenant
    globex: Tenant
    initech: Tenant  # its mapping versions a change by meta.timestamp, not the deal's update_time

    def post(self, tenant: Tenant, body: dict[str, Any], credentials: str | None = None) -> tuple[int, Any]:
        token = base64.b64encode((credentials or tenant.credentials).encode()).decode()
        request = urllib.request.Request(
            f"{self.runtime.url}/webhooks/{tenant.name}/pipedrive", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Basic {token}",
                     "User-Agent": "Pipedrive Webhooks"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def invoices(self, tenant: Tenant, deal_id: int) -> list[dict[str, Any]]:
        return [i for i in tenant.stripe.invoices.values() if i["metadata"].get("crm_record_id") == str(deal_id)]

    def runs(self, tenant: Tenant, deal_id: int) -> list[dict[str, Any]]:
        return [e for e in self.runtime.executions()
                if (e["input"] or {}).get("event", {}).get("record_id") == str(deal_id)
                and (e["input"] or {}).get("tenant") == tenant.name]

    def sweep(self, tenant: Tenant, since: str = "2h", *extra: str) -> int:
        return billflow(["sweep", "--api", self.runtime.url, "--tenant", tenant.name, "--rule", RULE_ID,
                         "--since", since, *extra])


def won_deal(tenant: Tenant) -> tuple[int, dict[str, Any]]:
    """A deal won five minutes ago in the tenant's Pipedrive, its organization and person linked, and the v2
    webhook announcing it."""
    deal_id = next(_ids)
    when = pipedrive_time(datetime.now(UTC) - timedelta(minutes=5))
    org_id, person_id = deal_id + 100_000, deal_id + 200_000
    tenant.pipedrive.add_organization(org_id, f"{tenant.name.title()} Org {deal_id}", street="Hauptstrasse 1",
                                      city="Berlin", postal_code="10115", country="Germany")
    tenant.pipedrive.add_person(person_id, "Ada Lovelace", email=f"ada.{deal_id}@example.com", org_id=org_id)
    deal = tenant.pipedrive.add_deal(deal_id, f"Deal {deal_id}", value=12500, currency="EUR", status="won",
                                     won_time=when, close_time=when, update_time=when, org_id=org_id,
                                     person_id=person_id)
    body = copy.deepcopy(WON)
    body["data"] = deal
    body["meta"].update(entity_id=str(deal_id), id=str(uuid.uuid4()), timestamp=when.replace("Z", ".250Z"),
                        correlation_id=str(uuid.uuid4()))
    return deal_id, body


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    servers = []
    tenants = {}
    for name in ("acme", "globex", "initech"):
        pipedrive = FakePipedrive(api_token=f"{name}-pipedrive-token", custom_fields=[INVOICE_FIELD]).start()
        stripe = FakeStripe(api_key=f"sk_test_{name}").start()
        servers += [pipedrive, stripe]
        tenants[name] = Tenant(name, f"billflow:{name}-hook-password", pipedrive, stripe)
    sources = {name: FakePipedrive.source_settings(t.credentials) for name, t in tenants.items()}
    sources["initech"]["mapping"] = sources["initech"]["mapping"].replace(
        "data.update_time ? data.update_time : meta.timestamp", "meta.timestamp")
    connections = {"tenants": {
        name: {
            "sources": {"pipedrive": sources[name]},
            "connections": {
                "pipedrive": t.pipedrive.connection_settings(),
                "stripe-main": {"type": "stripe", "base_url": t.stripe.url, "api_key": t.stripe.api_key},
            },
            "settings": {"daily_limits": {"invoice": 2 if name == "globex" else 500}},
        } for name, t in tenants.items()
    }}
    runtime = LocalRuntime(ROOT, port=0, rules=RULES, connections=connections, tenant="acme", echo=None,
                           fast_retries=True)
    runtime.start()
    runtime.put_rules(load_rules(RULES, "globex") + load_rules(RULES, "initech"))
    try:
        yield Stack(runtime, tenants["acme"], tenants["globex"], tenants["initech"])
    finally:
        runtime.stop()
        for server in servers:
            server.stop()


def test_a_won_deal_is_invoiced_once_with_its_organization_and_person_and_the_id_written_back(stack: Stack) -> None:
    acme = stack.acme
    deal_id, body = won_deal(acme)

    status, answer = stack.post(acme, body)
    again, _ = stack.post(acme, body | {"meta": {**body["meta"], "attempt": 2}})  # Pipedrive's retry
    stack.runtime.wait_idle()

    assert (status, again) == (202, 202) and answer["accepted"] == 1
    [invoice] = stack.invoices(acme, deal_id)
    customer = acme.stripe.customers[invoice["customer"]]
    assert customer["name"] == f"Acme Org {deal_id}"
    assert customer["email"] == f"ada.{deal_id}@example.com"
    assert customer["address"]["country"] == "DE"
    assert acme.pipedrive.deals[deal_id]["custom_fields"][INVOICE_FIELD] == invoice["id"]
    assert [p for p in acme.pipedrive.patches if p[0] == deal_id] == [
        (deal_id, {"custom_fields": {INVOICE_FIELD: invoice["id"]}})]
    assert acme.pipedrive.violations == [] and acme.stripe.violations == []


def test_wrong_or_missing_basic_credentials_are_refused_with_a_reason(stack: Stack) -> None:
    deal_id, body = won_deal(stack.acme)

    status, answer = stack.post(stack.acme, body, credentials="billflow:wrong")
    token_less = urllib.request.Request(f"{stack.runtime.url}/webhooks/acme/pipedrive", method="POST",
                                        data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(token_less, timeout=30)

    assert status == 401 and "Basic credentials do not match" in answer["message"]
    assert missing.value.code == 401 and "Basic" in json.loads(missing.value.read())["message"]
    stack.runtime.wait_idle()
    assert stack.invoices(stack.acme, deal_id) == []


def test_a_dropped_webhook_is_recovered_by_the_sweep_and_a_delivered_one_is_not_invoiced_twice(
    stack: Stack, capsys: pytest.CaptureFixture[str],
) -> None:
    acme = stack.acme
    delivered, body = won_deal(acme)
    dropped, _ = won_deal(acme)  # its webhook is never posted
    open_deal = next(_ids)
    acme.pipedrive.add_deal(open_deal, "Still open", value=10, status="open")
    assert stack.post(acme, body)[0] == 202
    stack.runtime.wait_idle()
    capsys.readouterr()

    assert stack.sweep(acme, "2h", "--dry-run", "--json") == 0
    dry = json.loads(capsys.readouterr().out)
    stack.runtime.wait_idle()
    assert stack.invoices(acme, dropped) == []  # a dry run starts nothing
    assert str(dropped) in dry["fed"] and str(delivered) not in dry["fed"]  # delivered: documented (or just
    # written back, so changed too recently for the window that ends now: the next sweep sees it documented)
    assert str(open_deal) not in dry["fed"] and dry["started"] == []

    assert stack.sweep(acme, "2h") == 0
    stack.runtime.wait_idle()
    assert stack.sweep(acme, "2h") == 0  # a second sweep finds everything documented
    stack.runtime.wait_idle()

    assert len(stack.invoices(acme, dropped)) == 1
    assert len(stack.invoices(acme, delivered)) == 1
    assert stack.invoices(acme, open_deal) == []
    capsys.readouterr()
    assert billflow(["log", "--api", stack.runtime.url, "--tenant", "acme", "--record",
                     f"pipedrive:deal:{dropped}"]) == 0
    log = capsys.readouterr().out
    assert "run (sweep)" in log and "action-0 (sweep)" in log


@pytest.mark.parametrize("tenant_name", ["acme", "initech"])
def test_a_webhook_and_the_sweep_racing_for_one_deal_make_one_invoice(stack: Stack, tenant_name: str) -> None:
    """acme: the webhook and the sweep version the win alike (one execution name); initech: they do not (the
    event's time is 250 ms after the deal's update_time), and the document's record-level key sends once."""
    acme = stack.acme if tenant_name == "acme" else stack.initech
    deals = [won_deal(acme) for _ in range(4)]
    start = threading.Barrier(len(deals) + 1)
    swept: list[dict[str, Any]] = []

    def deliver(body: dict[str, Any]) -> None:
        start.wait()
        assert stack.post(acme, body)[0] == 202

    def sweep() -> None:
        start.wait()
        now = datetime.now(UTC)
        answer = stack.runtime.invoke("SweepFunction", {
            "kind": "rule", "tenant": acme.name, "rule_id": RULE_ID,
            "since": pipedrive_time(now - timedelta(hours=1)), "until": pipedrive_time(now + timedelta(minutes=1))})
        assert answer["status"] == 200
        swept.append(answer["report"])

    threads = [threading.Thread(target=deliver, args=(body,)) for _, body in deals]
    threads.append(threading.Thread(target=sweep))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stack.runtime.wait_idle()

    [report] = swept
    assert {str(d) for d, _ in deals} <= set(report["fed"]) | set(report["documented"])  # both paths saw each
    for deal_id, _ in deals:
        assert len(stack.invoices(acme, deal_id)) == 1, deal_id
        names = {run["name"] for run in stack.runs(acme, deal_id)}
        if tenant_name == "acme":
            assert len(names) == 1, names  # the webhook and the sweep derived one execution name


def test_a_first_sight_that_does_not_say_what_changed_asks_pipedrive_whatever_the_order(stack: Stack) -> None:
    acme = stack.acme
    transitions = []
    for order in ("stale first", "won first"):
        deal_id, won = won_deal(acme)
        silent_won = copy.deepcopy(won) | {"previous": None}  # no `previous`: the body does not say what changed
        stale = copy.deepcopy(silent_won)
        stale["data"].update(status="open", won_time=None, close_time=None,
                             update_time=pipedrive_time(datetime.now(UTC) - timedelta(hours=1)))
        stale["meta"]["id"] = str(uuid.uuid4())
        bodies = [stale, silent_won] if order == "stale first" else [silent_won, stale]
        for body in bodies:
            assert stack.post(acme, body)[0] == 202
            stack.runtime.wait_idle()
        [invoice] = stack.invoices(acme, deal_id)
        assert acme.pipedrive.calls("GET", rf"/api/v2/deals/{deal_id}")  # billflow asked the CRM
        [run] = stack.runs(acme, deal_id)
        transitions.append((run["input"]["transition"], acme.pipedrive.deals[deal_id]["won_time"]))
        assert invoice["metadata"]["crm_record_id"] == str(deal_id)
    for transition, won_time in transitions:  # decided on the CRM's state: the deal's update time
        stamp = int(datetime.fromisoformat(won_time.replace("Z", "+00:00")).timestamp() * 1000)
        assert transition == f"status@{stamp}"


def test_two_tenants_in_one_deployment_never_mix_rules_secrets_or_limits(stack: Stack) -> None:
    acme, globex = stack.acme, stack.globex
    acme_deal, acme_body = won_deal(acme)
    globex_deals = [won_deal(globex) for _ in range(3)]

    # acme's credentials at globex's URL, and globex's at acme's: refused.
    assert stack.post(globex, acme_body, credentials=acme.credentials)[0] == 401
    assert stack.post(acme, globex_deals[0][1], credentials=globex.credentials)[0] == 401
    assert stack.post(acme, acme_body)[0] == 202
    for _, body in globex_deals:
        assert stack.post(globex, body)[0] == 202
    stack.runtime.wait_idle()

    assert len(stack.invoices(acme, acme_deal)) == 1
    invoiced = [d for d, _ in globex_deals if stack.invoices(globex, d)]
    assert len(invoiced) == 2  # globex's own daily limit (2); acme's (500) is untouched by globex's sends
    assert all(stack.invoices(acme, d) == [] for d, _ in globex_deals)
    assert stack.invoices(globex, acme_deal) == []
    # Each tenant's lookups went to its own Pipedrive with its own token.
    assert not acme.pipedrive.calls("GET", rf"/api/v2/deals/{globex_deals[0][0]}")
    assert all(r.headers.get("x-api-token") == "globex-pipedrive-token" for r in globex.pipedrive.requests)
    assert all(r.headers.get("x-api-token") == "acme-pipedrive-token" for r in acme.pipedrive.requests)
    limited = [run for d, _ in globex_deals for run in stack.runs(globex, d) if run["status"] != "SUCCEEDED"
               or d not in invoiced]
    assert limited  # the third globex deal ran into globex's limit


def test_the_scheduled_sweep_sweeps_each_tenants_rule_once_per_period(stack: Stack) -> None:
    dropped, _ = won_deal(stack.acme)  # its webhook never came
    first = datetime.now(UTC) + timedelta(minutes=1)

    def due(at: datetime) -> list[dict[str, Any]]:
        answer = stack.runtime.invoke("SweepFunction", {"kind": "due", "time": pipedrive_time(at)})
        stack.runtime.wait_idle()
        return list(answer["swept"])

    swept, again, later = due(first), due(first + timedelta(minutes=15)), due(first + timedelta(hours=1))

    assert sorted((r["tenant"], r["rule_id"]) for r in swept) == [(t, RULE_ID) for t in ("acme", "globex", "initech")]
    assert again == []  # sweep.every is 1h: not due 15 minutes later
    assert sorted(r["tenant"] for r in later) == ["acme", "globex", "initech"]
    assert len(stack.invoices(stack.acme, dropped)) == 1
    for report in swept + later:  # each tenant's sweep read its own Pipedrive only
        own = {"acme": stack.acme, "globex": stack.globex, "initech": stack.initech}[report["tenant"]]
        assert set(report["fed"]) <= {str(d) for d in own.pipedrive.deals}
    [acme_later] = [r for r in later if r["tenant"] == "acme"]
    assert str(dropped) not in acme_later["fed"]  # documented now: never fed twice


def test_a_sweep_by_hand_says_what_to_fix(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    unknown = billflow(["sweep", "--api", stack.runtime.url, "--tenant", "acme", "--rule", "no-such-rule",
                        "--since", "1h"])
    unknown_err = capsys.readouterr().err
    backwards = stack.sweep(stack.acme, "2026-12-01T00:00:00Z", "--until", "2026-11-30T00:00:00Z")
    backwards_err = capsys.readouterr().err
    too_long = stack.sweep(stack.acme, "2026-01-01T00:00:00Z", "--until", "2026-03-01T00:00:00Z")
    too_long_err = capsys.readouterr().err

    assert unknown != 0 and "no rule 'no-such-rule'" in unknown_err
    assert backwards != 0 and "the window is empty" in backwards_err
    assert too_long != 0 and "at most 31 days" in too_long_err


def test_a_schedule_time_nothing_filled_in_sweeps_now(stack: Stack) -> None:
    answer = stack.runtime.invoke("SweepFunction", {"kind": "due", "time": "<aws.scheduler.scheduled-time>"})
    assert isinstance(answer["swept"], list)  # swept what was due now, no failure


def test_a_dry_run_reads_a_pipedrive_body_through_the_tenants_mapping(
    stack: Stack, capsys: pytest.CaptureFixture[str],
) -> None:
    capsys.readouterr()
    code = billflow(["dry-run", "--api", stack.runtime.url, "--tenant", "acme", "--source", "pipedrive",
                     "--event", str(ROOT / "events" / "pipedrive" / "deal-won.json"), "--json"])
    report = json.loads(capsys.readouterr().out)

    assert code == 0 and report["sent"] == 0
    [event] = report["events"]
    assert (event["object"], event["action"]) == ("deal", "updated")
    [rule] = event["rules"]
    assert (rule["rule_id"], rule["matched"]) == (RULE_ID, True)
