"""Issue 8 §8 on the local runtime: a rule's error branch runs when a run fails or is limited, once, with
the failure in its placeholders, and is logged; a retried error branch does not alert twice."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from billflow.storage.execution_log import ExecutionLog
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from billflow_local.runtime import LocalRuntime
from tests.fakes.base import FakeServer, Request, Response
from tests.fakes.signing import post_stage_change
from tests.fakes.stripe_server import FakeStripe
from tests.fakes.twenty_server import FakeTwenty

ROOT = Path(__file__).resolve().parents[2]
TENANT = "alerts"
SECRET = "on-failure-e2e-secret"
SENDER = "billflow@billflow.example.com"
BILLING = "billing@billflow.example.com"


class AlertHook(FakeServer):
    """The ops team's webhook: 200 {"id"}, or 503 for the next `failing` deliveries."""

    name = "alert-hook"

    def __init__(self) -> None:
        super().__init__()
        self.failing = 0
        self.route("POST", "/alerts", self._receive)

    def _receive(self, req: Request) -> Response:
        if self.failing:
            self.failing -= 1
            return Response(503, {"error": "busy"})
        return Response(200, {"id": f"alert-{len(self.requests)}"})

    def about(self, deal: str) -> list[dict[str, Any]]:
        return [r.json() for r in self.requests if r.json().get("deal") == deal]


RULES = """\
id: invoice-or-alert
source: twenty
object: opportunity
trigger: {type: event, on: edited}
criteria:
  - {field: stage, comparator: changed_to, value: CUSTOMER}
actions:
  - {type: stripe.invoice, connection: stripe-main, options: {description: "{{ record.name }}"}}
on_failure:
  - type: notification
    options:
      title: "Not invoiced: {{ record.name }}"
      message: "{{ failure.status }}: {{ failure.reason }}"
      level: error
  - type: email_alert
    options:
      to: [BILLING]
      subject: "billflow {{ failure.status }}: {{ record.name }}"
      text: "{{ failure.reason }} (run {{ failure.execution }})"
  - {type: crm.field_update, field: billingStatus, value: "{{ failure.status }}: {{ failure.error }}"}
  - type: webhook
    options:
      url: HOOK/alerts
      body_format: raw
      body: {deal: "{{ record.name }}", status: "{{ failure.status }}", reason: "{{ failure.reason }}"}
"""


@dataclass
class Stack:
    runtime: LocalRuntime
    stripe: FakeStripe
    twenty: FakeTwenty
    hook: AlertHook

    def win(self, name: str) -> str:
        deal = self.twenty.add_opportunity(name, id=str(uuid.uuid4()), amount_micros=2_000_000_000, stage="CUSTOMER")
        assert post_stage_change(self.runtime.url, TENANT, SECRET, deal, timeout=30) == 202
        self.runtime.wait_idle(60)
        return str(deal["id"])

    def run_of(self, record_id: str) -> dict[str, Any]:
        [run] = [r for r in self.runtime.executions() if r["input"]["event"]["record_id"] == record_id]
        return run

    def notes(self, deal: str) -> list[dict[str, Any]]:
        found = []
        for note in self.runtime.notifications():
            try:
                document = json.loads(note["message"])
            except (TypeError, ValueError):
                continue
            if isinstance(document, dict) and document.get("title") == f"Not invoiced: {deal}":
                found.append(document)
        return found

    def emails(self, deal: str) -> list[Any]:
        return [m for m in ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages if deal in m.subject]

    def log(self, record_id: str) -> dict[str, dict[str, Any]]:
        log = ExecutionLog(self.runtime.name_of("ExecutionLogTable"))
        return {i["step"]: i for i in log.by_record(f"{TENANT}#twenty#opportunity#{record_id}", 50)}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stripe = FakeStripe().start()
    twenty = FakeTwenty(custom_fields={"opportunity": {"billingStatus": {"type": "string"}}}).start()
    hook = AlertHook().start()
    path = tmp_path_factory.mktemp("on-failure") / "rules.yaml"
    path.write_text(RULES.replace("BILLING", BILLING).replace("HOOK", hook.url))
    connections = {"tenants": {TENANT: {
        "sources": {"twenty": {"signing_secret": SECRET}},
        "connections": {"twenty": twenty.connection_settings(),
                        "stripe-main": {"type": "stripe", "base_url": stripe.url, "api_key": stripe.api_key}},
        "settings": {"daily_limits": {"invoice": 1}},
    }}}
    runtime = LocalRuntime(ROOT, port=0, rules=path, connections=connections, tenant=TENANT,
                           parameters={"SesFromAddress": SENDER}, echo=None, fast_retries=True)
    runtime.start()
    try:
        runtime.client("sesv2").create_email_identity(EmailIdentity=SENDER)
        yield Stack(runtime, stripe, twenty, hook)
    finally:
        runtime.stop()
        for server in (stripe, twenty, hook):
            server.stop()


def test_a_failed_run_runs_its_error_branch_once_with_the_reason(stack: Stack) -> None:
    stack.stripe.fail_next("PostInvoices", 400, message="No such tax rate: txr_gone")
    record_id = stack.win("Refused Robotics")

    run = stack.run_of(record_id)
    assert (run["status"], run["error"]) == ("FAILED", "RunFailed")
    [note] = stack.notes("Refused Robotics")
    assert note["level"] == "error"
    assert note["message"].startswith("failed: TargetRejected: ") and "No such tax rate: txr_gone" in note["message"]
    [email] = stack.emails("Refused Robotics")
    assert email.destinations == {"ToAddresses": [BILLING]} and email.subject == "billflow failed: Refused Robotics"
    assert f"(run {run['name']})" in email.body
    assert stack.twenty.patched("opportunity", record_id)["billingStatus"] == "failed: TargetRejected"
    [delivery] = stack.hook.about("Refused Robotics")
    assert delivery["status"] == "failed" and "txr_gone" in delivery["reason"]

    log = stack.log(record_id)
    assert log["run"]["status"] == "failed"
    assert {step: (log[step]["status"], log[step]["action_type"]) for step in log if step.startswith("on_failure")} == {
        "on_failure-0": ("notified", "notification"), "on_failure-1": ("sent", "email_alert"),
        "on_failure-2": ("updated", "field_update"), "on_failure-3": ("sent", "webhook")}
    assert "No such tax rate" in log["on_failure-3"]["reason"]
    assert run["states"][-2:] == ["EndFailed", "RunFailed"] and "LogOnFailure" in run["states"]


def test_a_limited_run_runs_its_error_branch_with_the_limit_as_reason(stack: Stack) -> None:
    stack.win("First Fleet")  # takes the day's one invoice
    record_id = stack.win("Second Fleet")

    run = stack.run_of(record_id)
    assert (run["status"], run["error"]) == ("FAILED", "DailyLimitReached")
    [note] = stack.notes("Second Fleet")
    assert note["message"] == "limited: daily limit of 1 invoice sends reached; nothing sent"
    assert stack.twenty.patched("opportunity", record_id)["billingStatus"] == "limited: DailyLimitReached"
    assert [d["status"] for d in stack.hook.about("Second Fleet")] == ["limited"]
    assert len(stack.emails("Second Fleet")) == 1
    assert stack.notes("First Fleet") == []  # a run that succeeds runs no error branch


def test_a_retried_error_branch_does_not_alert_twice(stack: Stack) -> None:
    """The alert webhook is busy once: the RunOnFailure task is retried, and only the webhook is sent again."""
    stack.hook.failing = 1
    record_id = stack.win("Busy Hook Inc")  # limited (the day's invoice is taken)

    run = stack.run_of(record_id)
    assert (run["status"], run["error"]) == ("FAILED", "DailyLimitReached")
    assert run["states"].count("RunOnFailure") == 1  # one state, retried inside (its Retry)
    assert len(stack.notes("Busy Hook Inc")) == 1
    assert len(stack.emails("Busy Hook Inc")) == 1
    assert [d["status"] for d in stack.hook.about("Busy Hook Inc")] == ["limited", "limited"]  # 503, then 200
    log = stack.log(record_id)
    assert sorted(s for s in log if s.startswith("on_failure")) == [f"on_failure-{i}" for i in range(4)]
