"""`make run`: the whole stack on this machine, shown working end to end, then left serving.

Starts a local Stripe-compatible server and a Twenty stand-in (both check every request against the
official contracts), a webhook receiver that verifies billflow's signature, and the local runtime with
examples/rules; posts a signed "opportunity won" webhook; shows each execution state by state, what
arrived, and the execution log; then keeps serving for curl or a CRM until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from billflow.storage.execution_log import ExecutionLog

from billflow_local.__main__ import console_token, print_console
from billflow_local.receiver import SignedWebhookReceiver
from billflow_local.runtime import LocalRuntime
from billflow_local.standins.signing import twenty_body, twenty_headers
from billflow_local.standins.stripe_server import FakeStripe
from billflow_local.standins.twenty_server import FakeTwenty, load_sample_workspace
from billflow_local.tables import format_log

ROOT = Path(__file__).resolve().parents[2]
TENANT = "demo"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m billflow_local.demo", description=__doc__)
    parser.add_argument("--port", type=int, default=3000, help="HTTP port of the local API (default 3000)")
    parser.add_argument("--once", action="store_true", help="exit after the demo instead of serving")
    args = parser.parse_args(argv)


    settings = yaml.safe_load((ROOT / "examples" / "local-connections.yaml").read_text())["tenants"][TENANT]
    stripe = FakeStripe().start()
    twenty = FakeTwenty(custom_fields={"opportunity": {"invoiceId": {"type": "string"}}}).start()
    twenty.seed(load_sample_workspace())
    receiver = SignedWebhookReceiver(settings["connections"]["finance-webhook"]["secret"]).start()
    settings["connections"]["twenty"] = twenty.connection_settings()
    settings["connections"]["stripe-main"] = {"type": "stripe", "base_url": stripe.url, "api_key": stripe.api_key}
    settings["connections"]["finance-webhook"]["url"] = f"{receiver.url}/hooks/finance"

    runtime = LocalRuntime(ROOT, port=args.port, rules=ROOT / "examples" / "rules",
                           connections={"tenants": {TENANT: settings}}, tenant=TENANT, echo=_say,
                           log_level="WARNING", console_token=console_token())
    try:
        runtime.start()
    except OSError as exc:
        print(f"error: cannot listen on 127.0.0.1:{args.port} ({exc.strerror or exc}); "
              "pick another port: make run PORT=3001", file=sys.stderr)
        return 1
    try:
        _section(f"billflow is running at {runtime.url} (local: moto, no AWS account)")
        print_console(runtime)
        event_file = ROOT / "events" / "twenty" / "opportunity-won.json"
        print(f"Sending a signed Twenty webhook: {event_file.relative_to(ROOT)} (stage -> CUSTOMER)")
        status, answer = _post_signed(runtime.url, settings["sources"]["twenty"]["signing_secret"], event_file)
        print(f"ingest answered {status}: {json.dumps(answer)}")
        runtime.wait_idle(120)
        _show_arrivals(stripe, twenty, receiver)
        _section("Execution log")
        print(format_log(ExecutionLog(runtime.name_of("ExecutionLogTable")).recent(TENANT, 20)))
        problems = stripe.violations + twenty.violations + receiver.violations
        if problems:
            print(f"\nCONTRACT PROBLEMS: {problems}")
            return 1
        if args.once:
            return 0
        _section("Still serving; Ctrl-C stops")
        for url in runtime.webhook_urls():
            print(f"  webhook: {url}")
        print(f"  admin:   {runtime.url}/admin/tenants/{TENANT}/rules   (billflow log --tenant {TENANT})")
        print_console(runtime)
        print("  send it again: README.md, 'Send a webhook by hand' (the same change is not invoiced twice)")
        stopping = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopping.set())
        while not stopping.wait(0.5):
            pass
        return 0
    finally:
        runtime.stop()
        for server in (stripe, twenty, receiver):
            server.stop()


def _post_signed(base_url: str, secret: str, event_file: Path) -> tuple[int, Any]:
    body = twenty_body(json.loads(event_file.read_text()))
    request = urllib.request.Request(  # noqa: S310 - our own local server
        f"{base_url}/webhooks/{TENANT}/twenty", data=body, method="POST",
        headers={"Content-Type": "application/json", **twenty_headers(secret, body)},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
        return resp.status, json.loads(resp.read())


def _show_arrivals(stripe: Any, twenty: Any, receiver: Any) -> None:
    _section("What arrived")
    for invoice in stripe.invoices.values():
        customer = stripe.customers[invoice["customer"]]
        items = stripe.items_of(invoice["id"])
        total = sum(i["amount"] for i in items) / 100
        print(f"Stripe (local, checked against Stripe's OpenAPI): invoice {invoice['id']} [{invoice['status']}] "
              f"{total:,.2f} {invoice['currency'].upper()} for {customer['name']} <{customer.get('email')}>, "
              f"{len(items)} item(s), due {_date(invoice.get('due_date'))}")
    for patch in twenty.patches:
        print(f"Twenty (local stand-in): PATCH {patch.object} {patch.id} {json.dumps(patch.fields)}")
    for delivery in receiver.deliveries:
        print(f"Finance webhook (signature verified): {json.dumps(delivery)}")
    if not stripe.invoices:
        print("No invoice arrived: see the execution log below.")


def _date(epoch: int | None) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d") if epoch else "on receipt"


def _section(title: str) -> None:
    print(f"\n── {title} " + "─" * max(0, 70 - len(title)), flush=True)


def _say(line: str) -> None:
    print(f"  {line}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
