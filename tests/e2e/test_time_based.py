"""Issue 3 on the local runtime, in time: time-based actions wait in Step Functions Wait states on the
virtual clock (advanced, never slept), re-check their criteria on the record as the CRM holds it then,
company criteria are decided after Lookup, and date-triggered rules fire from the scheduler once per date.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from billflow.storage.execution_log import ExecutionLog

from billflow_local.runtime import LocalRuntime
from tests.fakes.signing import signed_twenty_delivery
from tests.fakes.twenty_server import FakeTwenty

ROOT = Path(__file__).resolve().parents[2]
TENANT = "timely"
SIGNING_SECRET = "time-based-e2e-secret"
PARIS = ZoneInfo("Europe/Paris")

RULES = """\
id: won-follow-up
source: twenty
object: opportunity
timezone: Europe/Paris
trigger: {type: event, on: edited}
criteria:
  - {field: stage, comparator: changed_to, value: CUSTOMER}
time_based:
  - after: 2d
    recheck_criteria: true
    actions:
      - type: notification
        options: {title: Follow up, message: "follow-up {{ record.id }}: won two days ago"}
---
id: before-close
source: twenty
object: opportunity
timezone: Europe/Paris
trigger: {type: event, on: edited}
criteria:
  - {field: stage, comparator: changed_to, value: PROPOSAL}
actions:
  - type: notification
    options: {message: "proposal {{ record.id }} sent"}
time_based:
  - before: 3d
    field: closeDate
    at: "09:00"
    actions:
      - type: notification
        options: {message: "closing {{ record.id }} in three days"}
---
id: french-meetings
source: twenty
object: opportunity
trigger: {type: event, on: edited}
criteria:
  - {field: stage, comparator: changed_to, value: MEETING}
  - {field: company.address.addressCountry, comparator: is, value: France}
actions:
  - type: notification
    options: {message: "meeting {{ record.id }} with {{ company.name }}"}
---
id: renewal
source: twenty
object: opportunity
trigger: {type: date, field: closeDate, offset_days: 30, at: "09:00", timezone: Europe/Paris}
criteria:
  - {field: stage, comparator: is, value: CUSTOMER}
actions:
  - type: notification
    options: {message: "renew {{ record.id }} ({{ company.name }})"}
"""


@dataclass
class TimeStack:
    runtime: LocalRuntime
    twenty: FakeTwenty

    def opportunity(self, name: str, stage: str, country: str = "France", **fields: Any) -> dict[str, Any]:
        company = self.twenty.add_company(f"{name} SA", address={"addressCountry": country})
        return self.twenty.add_opportunity(name, stage=stage, company_id=company["id"], **fields)

    def post_update(self, record: dict[str, Any], changed: list[str], at: str | None = None) -> str:
        """Deliver the update as Twenty does, at `at` (now by default); the event's date."""
        payload = {
            "eventName": "opportunity.updated",
            "objectMetadata": {"id": "5b1c6a8e-0b7e-4a52-9d0f-6f0c1e1e2a01", "nameSingular": "opportunity"},
            "workspaceId": "3b8e6458-5fc1-4e63-8563-008ccddaa6db",
            "webhookId": "c2a9f1f4-9f3b-4b7e-a7c4-0d1b2e3f4a5b",
            "eventDate": at or datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "record": record,
            "updatedFields": changed,
        }
        headers, body = signed_twenty_delivery(SIGNING_SECRET, payload)
        request = urllib.request.Request(f"{self.runtime.url}/webhooks/{TENANT}/twenty", data=body,
                                         headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 202
        return str(payload["eventDate"])

    def notes(self, text: str) -> list[str]:
        """The messages of in-app notifications (the SNS document's message) containing `text`."""
        found = []
        for note in self.runtime.notifications():
            message = note["message"] or ""
            if message.startswith("{"):
                message = json.loads(message).get("message", "")
            if text in message:
                found.append(message)
        return found

    def log(self, record_id: str) -> list[dict[str, Any]]:
        log = ExecutionLog(self.runtime.name_of("ExecutionLogTable"))
        return sorted(log.by_record(f"{TENANT}#twenty#opportunity#{record_id}"), key=lambda i: str(i["at"]))

    def runs(self, record_id: str) -> list[dict[str, Any]]:
        return [e for e in self.runtime.executions() if e["input"]["event"]["record_id"] == record_id]

    def schedule(self, at: datetime) -> dict[str, Any]:
        """What EventBridge's schedule does at `at`: invoke the scheduler with the event's time."""
        event = {"version": "0", "id": "e2e", "detail-type": "Scheduled Event", "source": "aws.events",
                 "time": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "region": "us-east-1",
                 "resources": [], "detail": {}}
        answer: dict[str, Any] = self.runtime.invoke("SchedulerFunction", event)
        return answer


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TimeStack]:
    twenty = FakeTwenty().start()
    folder = tmp_path_factory.mktemp("time-based")
    (folder / "rules.yaml").write_text(RULES)
    connections = {"tenants": {TENANT: {
        "sources": {"twenty": {"signing_secret": SIGNING_SECRET}},
        "connections": {"twenty": twenty.connection_settings()},
    }}}
    runtime = LocalRuntime(ROOT, port=0, rules=folder / "rules.yaml", connections=connections, tenant=TENANT,
                           echo=None, fast_retries=True)
    runtime.start()
    try:
        yield TimeStack(runtime, twenty)
    finally:
        runtime.stop()
        twenty.stop()


def test_an_action_two_days_after_the_trigger_runs_when_the_clock_gets_there(stack: TimeStack) -> None:
    deal = stack.opportunity("Later Ltd", "CUSTOMER")
    stack.post_update(deal, ["stage"])
    stack.runtime.wait_idle(30, include_waiting=False)

    [run] = stack.runs(deal["id"])
    assert (run["status"], run["states"][-1]) == ("RUNNING", "WaitUntilDue"), (run["error"], run["cause"])
    assert stack.notes(f"follow-up {deal['id']}") == []  # nothing yet
    [scheduled] = [i for i in stack.log(deal["id"]) if i["status"] == "scheduled"]
    assert "2d after the trigger: waiting until" in str(scheduled["reason"])

    stack.runtime.advance_clock(2 * 86400)
    stack.runtime.wait_idle(30)

    [run] = stack.runs(deal["id"])
    assert run["status"] == "SUCCEEDED", run
    assert stack.notes(f"follow-up {deal['id']}") == [f"follow-up {deal['id']}: won two days ago"]
    assert "Refresh" in run["states"]  # recheck_criteria: the record was fetched again
    statuses = [i["status"] for i in stack.log(deal["id"])]
    assert statuses == ["scheduled", "notified", "succeeded"]
    assert stack.twenty.violations == []


def test_a_recheck_skips_the_action_when_the_record_changed_meanwhile(stack: TimeStack) -> None:
    deal = stack.opportunity("Fickle Ltd", "CUSTOMER")
    stack.post_update(deal, ["stage"])
    stack.runtime.wait_idle(30, include_waiting=False)
    stack.twenty.add_record("opportunity", {**stack.twenty.get("opportunity", deal["id"]), "stage": "MEETING"})

    stack.runtime.advance_clock(2 * 86400)
    stack.runtime.wait_idle(30)

    [run] = stack.runs(deal["id"])
    assert run["status"] == "SUCCEEDED"
    assert stack.notes(f"follow-up {deal['id']}") == []  # nothing sent
    skipped = [i for i in stack.log(deal["id"]) if i["status"] == "skipped"]
    assert len(skipped) == 1
    assert "criteria no longer hold: stage is now 'MEETING', was 'CUSTOMER'" in str(skipped[0]["reason"])
    assert stack.log(deal["id"])[-1]["reason"] == "0 action(s) done, 1 skipped"


def test_an_action_relative_to_a_date_field_waits_for_that_date_at_the_rule_time(stack: TimeStack) -> None:
    close = (datetime.now(UTC) + timedelta(days=10)).date()
    deal = stack.opportunity("Closing SAS", "PROPOSAL", close_date=f"{close.isoformat()}T00:00:00.000Z")
    stack.post_update(deal, ["stage"])
    stack.runtime.wait_idle(30, include_waiting=False)

    # 3 days before the close date, 09:00 in Paris; the immediate action has run already.
    due = datetime.combine(close - timedelta(days=3), datetime.min.time().replace(hour=9), tzinfo=PARIS)
    assert stack.notes(f"proposal {deal['id']}") == [f"proposal {deal['id']} sent"]
    assert stack.notes(f"closing {deal['id']}") == []
    [scheduled] = [i for i in stack.log(deal["id"]) if i["status"] == "scheduled"]
    assert str(scheduled["reason"]).endswith(due.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))

    stack.runtime.advance_clock((due - datetime.now(UTC)).total_seconds() - 3600)
    stack.runtime.wait_idle(30, include_waiting=False)
    assert stack.notes(f"closing {deal['id']}") == []  # an hour early: still waiting

    stack.runtime.advance_clock(3600 + 60)
    stack.runtime.wait_idle(30)
    assert stack.notes(f"closing {deal['id']}") == [f"closing {deal['id']} in three days"]
    [run] = stack.runs(deal["id"])
    assert run["status"] == "SUCCEEDED"


def test_company_criteria_are_decided_after_lookup(stack: TimeStack) -> None:
    french = stack.opportunity("Paris Robotics", "MEETING", country="France")
    german = stack.opportunity("Berlin Robotics", "MEETING", country="Germany")
    stack.post_update(french, ["stage"])
    german_at = stack.post_update(german, ["stage"])
    stack.runtime.wait_idle(30)

    assert stack.notes(f"meeting {french['id']}") == [f"meeting {french['id']} with Paris Robotics SA"]
    assert stack.notes(f"meeting {german['id']}") == []
    [run] = stack.runs(german["id"])
    assert run["status"] == "SUCCEEDED"
    assert run["states"][:5] == ["Lookup", "NextAction", "HasAction", "Decide", "Decided"]
    [ended] = stack.log(german["id"])
    assert ended["status"] == "not_matched"
    assert "company.address.addressCountry is 'Germany'" in str(ended["reason"])
    # The transition still names the run: a redelivery (the same event, signed again) starts nothing new.
    stack.post_update(german, ["stage"], at=german_at)
    stack.runtime.wait_idle(30)
    assert len(stack.runs(german["id"])) == 1


def test_a_date_triggered_rule_fires_once_when_its_date_comes(stack: TimeStack) -> None:
    close = (datetime.now(UTC) + timedelta(days=5)).date()
    deal = stack.opportunity("Renewal GmbH", "CUSTOMER", close_date=f"{close.isoformat()}T00:00:00.000Z")
    stack.post_update(deal, ["name"])  # any event makes billflow index the record's close date
    stack.runtime.wait_idle(30)
    due = datetime.combine(close + timedelta(days=30), datetime.min.time().replace(hour=9), tzinfo=PARIS)

    early = stack.schedule(due - timedelta(hours=1))
    assert early["started"] == [], early
    fired = stack.schedule(due + timedelta(minutes=15))
    assert len(fired["started"]) == 1
    again = stack.schedule(due + timedelta(minutes=30))  # the window moved on: nothing fires twice
    assert again["started"] == [] and again["due"] == 0
    stack.runtime.wait_idle(30)

    assert stack.notes(f"renew {deal['id']}") == [f"renew {deal['id']} (Renewal GmbH SA)"]
    [run] = stack.runs(deal["id"])
    assert run["name"] == fired["started"][0]
    assert run["input"]["transition"] == f"date:closeDate@{due.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"


def test_a_date_triggered_run_checks_the_record_as_it_is_on_the_day(stack: TimeStack) -> None:
    close = (datetime.now(UTC) + timedelta(days=6)).date()
    lost = stack.opportunity("Lost Later Inc", "CUSTOMER", close_date=f"{close.isoformat()}T00:00:00.000Z")
    moved = stack.opportunity("Moved Inc", "CUSTOMER", close_date=f"{close.isoformat()}T00:00:00.000Z")
    for deal in (lost, moved):
        stack.post_update(deal, ["name"])
    stack.runtime.wait_idle(30)
    # Changed in the CRM with no webhook billflow heard of: the run must see it.
    stack.twenty.add_record("opportunity", {**stack.twenty.get("opportunity", lost["id"]), "stage": "NEW"})
    later = (close + timedelta(days=9)).isoformat()
    stack.twenty.add_record("opportunity", {**stack.twenty.get("opportunity", moved["id"]),
                                            "closeDate": f"{later}T00:00:00.000Z"})
    due = datetime.combine(close + timedelta(days=30), datetime.min.time().replace(hour=9), tzinfo=PARIS)

    fired = stack.schedule(due + timedelta(minutes=5))
    assert len(fired["started"]) == 2
    stack.runtime.wait_idle(30)

    assert stack.notes(f"renew {lost['id']}") == [] and stack.notes(f"renew {moved['id']}") == []
    assert "stage is 'NEW'" in str(stack.log(lost["id"])[-1]["reason"])
    assert f"closeDate is now '{later}T00:00:00.000Z'" in str(stack.log(moved["id"])[-1]["reason"])
    assert {i["status"] for i in stack.log(lost["id"]) + stack.log(moved["id"])} == {"not_matched"}


