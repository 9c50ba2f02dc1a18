"""The `billflow` CLI over HTTP against the local runtime: the rule lifecycle, dry runs, the log, replays.

The admin routes are the template's (AdminFunction's HttpApi events); Stripe, Twenty and the finance
webhook are contract-checked local servers. One runtime serves the module; each test uses its own deals.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from billflow_cli.main import main
from billflow_local.runtime import LocalRuntime
from tests.fakes.base import FakeServer, Request, Response
from tests.fakes.signing import EVENTS_DIR, signed_twenty_delivery
from tests.fakes.stripe_server import FakeStripe
from tests.fakes.twenty_server import FakeTwenty, load_sample_workspace

ROOT = Path(__file__).resolve().parents[2]
TENANT = "demo"
SIGNING_SECRET = "admin-runtime-test-secret"
HOOK_SECRET = "adminruntime42"


class Receiver(FakeServer):
    """The finance team's webhook: 200 {"id"}, or 400 while `refusing` (a final rejection: no retries)."""

    name = "finance-webhook"

    def __init__(self) -> None:
        super().__init__()
        self.refusing = False
        self.route("POST", "/hooks/finance", self._receive)

    def _receive(self, req: Request) -> Response:
        if self.refusing:
            return Response(400, {"error": "finance system is closed for the audit"})
        return Response(200, {"id": f"note-{len(self.requests)}"})

    def about(self, deal_name: str) -> list[Request]:
        """Deliveries about a deal (the example rule's payload names the opportunity)."""
        return [r for r in self.requests if r.json().get("opportunity") == deal_name]


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FakeStripe, FakeTwenty, Receiver]]:
    stripe = FakeStripe()
    twenty = FakeTwenty(custom_fields={"opportunity": {"invoiceId": {"type": "string"}}})
    twenty.seed(load_sample_workspace())
    receiver = Receiver()
    for server in (stripe, twenty, receiver):
        server.start()
    yield stripe, twenty, receiver
    for server in (stripe, twenty, receiver):
        server.stop()


@pytest.fixture(scope="module")
def runtime(
    tmp_path_factory: pytest.TempPathFactory, servers: tuple[FakeStripe, FakeTwenty, Receiver]
) -> Iterator[LocalRuntime]:
    stripe, twenty, receiver = servers
    connections = tmp_path_factory.mktemp("admin-runtime") / "connections.yaml"
    connections.write_text(json.dumps({"tenants": {TENANT: {
        "sources": {"twenty": {"signing_secret": SIGNING_SECRET}},
        "connections": {
            "twenty": twenty.connection_settings(),
            "stripe-main": {"type": "stripe", "base_url": stripe.url, "api_key": stripe.api_key},
            "finance-webhook": {"type": "webhook", "url": f"{receiver.url}/hooks/finance", "secret": HOOK_SECRET},
        },
    }}}))
    with LocalRuntime(ROOT, port=0, connections=connections, echo=None, fast_retries=True,
                      log_level="WARNING") as local:
        yield local


def cli(runtime: LocalRuntime, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main([*argv, "--tenant", TENANT, "--api", runtime.url])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def won_deal(runtime: LocalRuntime, twenty: FakeTwenty, name: str) -> dict[str, Any]:
    """A deal of a new company whose stage just became CUSTOMER, as Twenty reports it (signed)."""
    company = twenty.add_company(f"{name} Inc")
    deal = twenty.add_opportunity(name, stage="CUSTOMER", company_id=company["id"], amount_micros=2_500_000_000)
    payload = {
        "eventName": "opportunity.updated", "objectMetadata": {"nameSingular": "opportunity"},
        "webhookId": "7a826602-191a-4113-a821-8ea75d52552f",
        "eventDate": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "record": deal, "updatedFields": ["stage"],
    }
    headers, body = signed_twenty_delivery(SIGNING_SECRET, payload)
    request = urllib.request.Request(f"{runtime.url}/webhooks/{TENANT}/twenty", data=body, headers=headers,
                                     method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 202
    runtime.wait_idle(timeout=45)
    return deal


def runs_for(runtime: LocalRuntime, record_id: str) -> list[dict[str, Any]]:
    return [e for e in runtime.executions() if e["input"]["event"]["record_id"] == record_id]


def snapshot(runtime: LocalRuntime) -> dict[str, list[dict[str, Any]]]:
    ddb = runtime.client("dynamodb")
    return {name: sorted(ddb.scan(TableName=name)["Items"], key=lambda i: json.dumps(i, sort_keys=True))
            for name in ddb.list_tables()["TableNames"]}


def test_rules_live_their_lifecycle_and_inactive_ones_never_run(
    runtime: LocalRuntime, servers: tuple[FakeStripe, FakeTwenty, Receiver], capsys: pytest.CaptureFixture[str],
) -> None:
    _, twenty, receiver = servers
    out = cli(runtime, capsys, "rules", "apply", str(ROOT / "examples" / "rules"))
    assert "    create  won-to-stripe" in out
    out = cli(runtime, capsys, "rules", "clone", "won-to-stripe", "won-to-stripe-eu", "--name", "EU deals")
    assert out.startswith("cloned won-to-stripe as won-to-stripe-eu (inactive)")

    first = won_deal(runtime, twenty, "Lifecycle One")
    assert [r["input"]["rule"]["id"] for r in runs_for(runtime, first["id"])] == ["won-to-stripe"]

    cli(runtime, capsys, "rules", "deactivate", "won-to-stripe")
    cli(runtime, capsys, "rules", "activate", "won-to-stripe-eu")
    out = cli(runtime, capsys, "rules", "reorder", "--source", "twenty", "--object", "opportunity",
              "won-to-stripe-eu", "won-to-stripe")
    assert [line.split() for line in out.splitlines()[1:]] == [
        ["10", "won-to-stripe-eu", "active"], ["20", "won-to-stripe", "inactive"]]
    second = won_deal(runtime, twenty, "Lifecycle Two")
    runs = runs_for(runtime, second["id"])
    assert [(r["input"]["rule"]["id"], r["status"]) for r in runs] == [("won-to-stripe-eu", "SUCCEEDED")]
    assert len(receiver.about("Lifecycle Two")) == 1

    shown = yaml.safe_load(cli(runtime, capsys, "rules", "show", "won-to-stripe"))
    assert (shown["active"], shown["order"]) == (False, 20)  # kept while inactive
    cli(runtime, capsys, "rules", "delete", "won-to-stripe-eu")
    out = cli(runtime, capsys, "rules", "list")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["won-to-stripe"]
    cli(runtime, capsys, "rules", "activate", "won-to-stripe")


def test_a_dry_run_sends_nothing_counts_nothing_and_stores_nothing(
    runtime: LocalRuntime, servers: tuple[FakeStripe, FakeTwenty, Receiver], capsys: pytest.CaptureFixture[str],
) -> None:
    cli(runtime, capsys, "rules", "apply", str(ROOT / "examples" / "rules"))
    runtime.wait_idle(timeout=30)
    seen = {server.name: len(server.requests) for server in servers}
    executions = len(runtime.executions())
    before = snapshot(runtime)

    out = cli(runtime, capsys, "dry-run", "--event", str(EVENTS_DIR / "twenty" / "opportunity-won.json"))
    lines = out.splitlines()
    assert any(line.startswith("rule won-to-stripe (order 10, active): RUNS → execution won-to-stripe-")
               for line in lines), out
    assert "    ✓ 2. amount.amountMicros greater_than 0: amount.amountMicros is 12500000000: greater_than 0 holds" \
        in lines
    stripe = servers[0]
    assert f"    POST {stripe.url}/v1/invoices" in lines
    assert "      unit_amount=1250000" in lines
    assert any(line.startswith("  action 2: webhook via finance-webhook") for line in lines)
    assert lines[-1] == "dry run: nothing was sent, counted or stored"

    report = json.loads(cli(runtime, capsys, "dry-run", "--event",
                            str(EVENTS_DIR / "twenty" / "opportunity-won.json"), "--json"))
    (rule,) = report["events"][0]["rules"]
    assert [a["type"] for a in rule["actions"]] == ["invoice", "webhook"]
    assert all(a["error"] is None for a in rule["actions"])

    runtime.wait_idle(timeout=30)
    assert {server.name: len(server.requests) for server in servers} == seen  # no request reached anyone
    assert len(runtime.executions()) == executions
    assert snapshot(runtime) == before  # no counter, record state, log item or idempotency record


def test_a_failed_run_is_found_in_the_log_and_replayed_without_sending_twice(
    runtime: LocalRuntime, servers: tuple[FakeStripe, FakeTwenty, Receiver], capsys: pytest.CaptureFixture[str],
) -> None:
    stripe, twenty, receiver = servers
    cli(runtime, capsys, "rules", "apply", str(ROOT / "examples" / "rules"))
    receiver.refusing = True
    try:
        deal = won_deal(runtime, twenty, "Replay Robotics")
    finally:
        receiver.refusing = False
    (failed,) = runs_for(runtime, deal["id"])
    assert (failed["status"], failed["error"]) == ("FAILED", "RunFailed")
    invoices = [i for i in stripe.invoices.values() if i["metadata"].get("crm_record_id") == deal["id"]]
    assert len(invoices) == 1  # the invoice was created before the webhook was refused

    logged = json.loads(cli(runtime, capsys, "log", "--status", "failed", "--json"))
    assert failed["name"] in {item["execution"] for item in logged}
    by_record = json.loads(cli(runtime, capsys, "log", "--record", f"twenty:opportunity:{deal['id']}", "--json"))
    assert {i["execution"] for i in by_record} == {failed["name"]}
    assert {i["step"] for i in by_record} == {"action-0", "run"}  # the invoice was logged, then the failure
    assert any(i["step"] == "run" and i["status"] == "failed" for i in by_record)

    stripe_posts = len([r for r in stripe.requests if r.method == "POST"])
    out = cli(runtime, capsys, "replay", failed["name"])
    assert out.strip() == f"replaying {failed['name']} (failed, RunFailed) as {failed['name']}-r1"
    runtime.wait_idle(timeout=45)

    runs = {r["name"]: r for r in runs_for(runtime, deal["id"])}
    assert runs[f"{failed['name']}-r1"]["status"] == "SUCCEEDED"
    assert len([r for r in stripe.requests if r.method == "POST"]) == stripe_posts  # no second invoice
    assert len([i for i in stripe.invoices.values() if i["metadata"].get("crm_record_id") == deal["id"]]) == 1
    assert len(receiver.about("Replay Robotics")) == 2  # refused once, delivered by the replay
    assert stripe.violations == twenty.violations == receiver.violations == []

    by_rule = json.loads(cli(runtime, capsys, "log", "--rule", "won-to-stripe", "--status", "succeeded", "--json"))
    assert f"{failed['name']}-r1" in {item["execution"] for item in by_rule}
    status, answer = _post(runtime, f"/admin/tenants/{TENANT}/executions/{failed['name']}-r1/replay")
    assert status == 400
    assert "only failed or limited runs" in answer["message"]


def _post(runtime: LocalRuntime, path: str) -> tuple[int, Any]:
    request = urllib.request.Request(f"{runtime.url}{path}", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_connection_is_tested_before_the_first_deal(
    runtime: LocalRuntime, capsys: pytest.CaptureFixture[str],
) -> None:
    """`billflow connections test` goes through the admin API to the Stripe stand-in's GET /v1/account."""
    out = cli(runtime, capsys, "connections", "test", "stripe-main")
    assert "stripe-main (stripe): ok" in out
    assert "currency:" in out

    code = main(["connections", "test", "no-such-connection", "--tenant", TENANT, "--api", runtime.url])
    _, err = capsys.readouterr()
    assert code != 0 and "no-such-connection" in err


# ------------------------------------------------------------------------------------------- issue 13 (console API)
def _get(runtime: LocalRuntime, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"{runtime.url}{path}", timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_run_s_path_is_drawn_from_the_real_state_machine(
    runtime: LocalRuntime, servers: tuple[FakeStripe, FakeTwenty, Receiver], capsys: pytest.CaptureFixture[str],
) -> None:
    """The real ASL on moto's engine: a run refused by the webhook target fails in the webhook's dispatch,
    after the invoice's states passed; every state of the path is one of the definition's."""
    _, twenty, receiver = servers
    cli(runtime, capsys, "rules", "apply", str(ROOT / "examples" / "rules"))
    receiver.refusing = True
    try:
        deal = won_deal(runtime, twenty, "Path Pottery")
    finally:
        receiver.refusing = False
    (failed,) = runs_for(runtime, deal["id"])
    status, definition = _get(runtime, "/admin/statemachine")
    assert status == 200

    def state_names(states: dict[str, Any]) -> set[str]:
        names = set(states)
        for state in states.values():
            for branch in [state.get("ItemProcessor") or state.get("Iterator") or {}, *state.get("Branches", [])]:
                names |= state_names(branch.get("States", {}))
        return names

    known = state_names(definition["definition"]["States"])
    status, path = _get(runtime, f"/admin/tenants/{TENANT}/executions/{failed['name']}/path")
    assert status == 200, path
    assert path["status"] == "FAILED"
    states = {s["name"]: s for s in path["states"]}
    assert set(states) <= known
    assert definition["definition"]["StartAt"] in states
    assert any(s["status"] == "failed" for s in path["states"])
    assert any(s["status"] == "passed" for s in path["states"])
    assert all(s["entered"] for s in path["states"])
    status, _ = _get(runtime, f"/admin/tenants/another/executions/{failed['name']}/path")
    assert status == 404


def test_a_daily_limit_set_from_the_cli_limits_the_next_run_and_shows_in_usage(
    runtime: LocalRuntime, servers: tuple[FakeStripe, FakeTwenty, Receiver], capsys: pytest.CaptureFixture[str],
) -> None:
    stripe, twenty, _ = servers
    cli(runtime, capsys, "rules", "apply", str(ROOT / "examples" / "rules"))
    _, before = _get(runtime, f"/admin/tenants/{TENANT}/usage?days=1")
    # Document actions count by document type: stripe.invoice under "invoice" (Action.limit_key).
    sent_today = {u["action_type"]: u["count"] for u in before["today"]}.get("invoice", 0)
    limit = max(sent_today, 1)  # earlier tests of this runtime may have sent invoices today
    cli(runtime, capsys, "settings", "set", f"daily_limits.invoice={limit}")
    try:
        deals = [won_deal(runtime, twenty, "Limited Lamps")]
        if sent_today == 0:
            deals.append(won_deal(runtime, twenty, "Limited Lamps Two"))
        (limited,) = runs_for(runtime, deals[-1]["id"])
        assert (limited["status"], limited["error"]) == ("FAILED", "DailyLimitReached")
        assert not [i for i in stripe.invoices.values() if i["metadata"].get("crm_record_id") == deals[-1]["id"]]
        status, usage = _get(runtime, f"/admin/tenants/{TENANT}/usage?days=7")
        assert status == 200
        today = {u["action_type"]: u for u in usage["today"]}
        assert today["invoice"] == {"action_type": "invoice", "count": limit, "limit": limit}
        assert usage["days"][-1]["limited"] >= 1
        assert len(usage["days"]) == 7
    finally:
        cli(runtime, capsys, "settings", "set", "daily_limits.invoice=null")


def test_connections_made_from_the_cli_live_in_the_runtime_s_secrets_manager(
    runtime: LocalRuntime, servers: tuple[FakeStripe, FakeTwenty, Receiver], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    stripe, _, _ = servers
    monkeypatch.setattr("sys.stdin", io.StringIO(stripe.api_key + "\n"))
    out = cli(runtime, capsys, "connections", "create", "stripe-cli", "--type", "stripe",
              "--set", f"base_url={stripe.url}", "--secret", "api_key")
    assert "created stripe-cli" in out
    assert stripe.api_key not in out
    sm = runtime.client("secretsmanager")
    (name,) = [s["Name"] for s in sm.list_secrets()["SecretList"]
               if s["Name"].endswith(f"/{TENANT}/connection/stripe-cli")]
    secret = sm.get_secret_value(SecretId=name)
    assert json.loads(secret["SecretString"])["api_key"] == stripe.api_key
    assert "stripe-cli (stripe): ok" in cli(runtime, capsys, "connections", "test", "stripe-cli")
    listed = cli(runtime, capsys, "connections", "list")
    assert "stripe-cli" in listed and "stripe-main" in listed
    assert stripe.api_key not in listed
    cli(runtime, capsys, "connections", "delete", "stripe-cli")


def test_oauth_connect_round_trips_through_the_local_callback(
    runtime: LocalRuntime, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io
    from urllib.parse import urlsplit

    from tests.fakes.oauth_server import OAuthFake

    with OAuthFake(style="xero") as xero:
        monkeypatch.setattr("sys.stdin", io.StringIO("client-secret-1\n"))
        cli(runtime, capsys, "connections", "create", "xero-main", "--type", "xero", "--set", "client_id=client-1",
            "--set", f"authorize_url={xero.authorize_url}", "--set", f"token_url={xero.token_url}",
            "--set", f"base_url={xero.url}", "--secret", "client_secret")
        out = cli(runtime, capsys, "connections", "connect", "xero-main")
        link = out.splitlines()[1]
        assert f"{runtime.url}/oauth/callback" in out
        back = xero.consent(link)
        assert back.startswith(f"{runtime.url}/oauth/callback?")
        status, answer = _get(runtime, back.removeprefix(runtime.url))
        assert (status, answer["connected"]) == (200, True)
        assert answer["notes"] == [f"tenant_id: Demo Company (US) ({xero.organisations[0]['tenantId']})"]
        status, again = _get(runtime, back.removeprefix(runtime.url))
        assert status == 400  # the state was used
        assert "refresh_token" in cli(runtime, capsys, "connections", "list")
        assert xero.current_refresh_token(0) not in json.dumps([answer, again])
        assert urlsplit(link).netloc == urlsplit(xero.url).netloc
