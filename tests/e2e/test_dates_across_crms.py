"""Issue 12's date rules over every record, through HubSpot's search API and a generic source's configured search
(the Pipedrive example), on the local runtime: the stack's own EventBridge Scheduler schedule fires on the
runtime's clock, records no webhook ever announced are found in each CRM, each is handled once per rule and
date however often the scheduler covers its window, and a day the scheduler was off is caught up.

HubSpot keeps two kinds of dates: a `date` property (a date picker made in HubSpot) is a calendar date stored
at midnight UTC ("YYYY-MM-DD" in API answers, epoch milliseconds in writes and webhooks); a `datetime`
property (closedate) is an instant, whose day is its local day in the rule's time zone. Pipedrive's
expected_close_date is a calendar date, and its deal list has no parameter for it: billflow reads the open
deals (the rule's `status is open`, a parameter Pipedrive takes) and picks the due ones itself.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from billflow_local.config import load_rules
from billflow_local.runtime import LocalRuntime
from billflow_local.scheduler import Firing
from billflow_local.standins.hubspot_server import FakeHubSpot
from billflow_local.standins.pipedrive_server import FakePipedrive
from tests.fakes.hubspot_signing import hubspot_body, property_change, v3_headers

ROOT = Path(__file__).resolve().parents[2]
HS, PD = "dates-hs", "dates-pd"
HS_SECRET = "dates-hubspot-client-secret"
NEW_YORK, LOS_ANGELES = ZoneInfo("America/New_York"), ZoneInfo("America/Los_Angeles")
DUE_SCHEDULE = "SchedulerDueSchedule"

HUBSPOT_RULES = """
rules:
  - id: renewal-reminder
    source: hubspot
    object: deal
    trigger: {type: date, field: renewal_date, offset_days: -3, at: "09:00", timezone: America/New_York}
    criteria:
      - {field: dealstage, comparator: is, value: closedwon}
    actions:
      - {type: notification, options: {message: "hs renew {{ record.id }}"}}
  - id: close-call
    source: hubspot
    object: deal
    trigger: {type: date, field: closedate, at: "17:00", timezone: America/Los_Angeles}
    actions:
      - {type: notification, options: {message: "hs close {{ record.id }}"}}
"""
PIPEDRIVE_RULES = """
rules:
  - id: closing-today
    source: pipedrive
    object: deal
    trigger: {type: date, field: expected_close_date, at: "08:00", timezone: America/Los_Angeles}
    criteria:
      - {field: status, comparator: is, value: open}
    actions:
      - {type: notification, options: {message: "pd closing {{ record.id }}"}}
"""


@dataclass
class Stack:
    runtime: LocalRuntime
    hubspot: FakeHubSpot
    pipedrive: FakePipedrive
    next_deal: int = 7000

    def notes(self, prefix: str) -> list[str]:
        messages = [json.loads(n["message"])["message"] for n in self.runtime.notifications()]
        return [m for m in messages if str(m).startswith(prefix)]

    def runs(self, tenant: str, record_id: str) -> list[dict[str, Any]]:
        return [e for e in self.runtime.executions() if (e["input"] or {}).get("tenant") == tenant
                and (e["input"] or {}).get("event", {}).get("record_id") == record_id]

    def hubspot_deal(self, stage: str = "closedwon", **properties: Any) -> str:
        return self.hubspot.add("deal", {"dealname": "Renewal", "amount": "100", "dealstage": stage, **properties})

    def pipedrive_deal(self, close: date, status: str = "open") -> str:
        self.next_deal += 1
        self.pipedrive.add_deal(self.next_deal, f"Deal {self.next_deal}", value=50, currency="USD", status=status,
                                expected_close_date=close.isoformat())
        return str(self.next_deal)

    def post_hubspot(self, events: list[dict[str, Any]]) -> int:
        """A batch signed as HubSpot signs it (v3), to the HubSpot tenant's webhook."""
        body = hubspot_body(events)
        url = self.runtime.url.replace("http://", "https://") + f"/webhooks/{HS}/hubspot"
        request = urllib.request.Request(f"{self.runtime.url}/webhooks/{HS}/hubspot", data=body, method="POST",
                                         headers=v3_headers(HS_SECRET, "POST", url, body))
        with urllib.request.urlopen(request, timeout=30) as answer:
            status: int = answer.status
        self.runtime.wait_idle(30)
        return status

    def fire(self, until: datetime) -> list[Firing]:
        """Move the clock to `until` and let the runtime's Scheduler fire what came due; then settle."""
        self.runtime.advance_clock((until - self.runtime.now()).total_seconds())
        fired = self.runtime.fire_schedules()
        self.runtime.wait_idle(60)
        return fired

    def set_due_schedule(self, state: str) -> None:
        """Disable or enable the stack's own schedule through the Scheduler API (the scheduler "is down")."""
        scheduler = self.runtime.client("scheduler")
        [listed] = [s for s in scheduler.list_schedules()["Schedules"] if s["Name"].endswith(DUE_SCHEDULE)]
        found = scheduler.get_schedule(Name=listed["Name"], GroupName=listed.get("GroupName") or "default")
        scheduler.update_schedule(
            Name=found["Name"], GroupName=found.get("GroupName") or "default",
            ScheduleExpression=found["ScheduleExpression"], FlexibleTimeWindow=found["FlexibleTimeWindow"],
            Target=found["Target"], State=state,
            **({"ScheduleExpressionTimezone": found["ScheduleExpressionTimezone"]}
               if found.get("ScheduleExpressionTimezone") else {}))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("dates")
    (folder / "hubspot.yaml").write_text(HUBSPOT_RULES)
    (folder / "pipedrive.yaml").write_text(PIPEDRIVE_RULES)
    with FakeHubSpot() as hubspot, FakePipedrive(api_token="dates-pipedrive-token") as pipedrive:
        hubspot.add_property("deal", "renewal_date", type="date")
        hubspot_connection = hubspot.connection_settings()
        connections = {"tenants": {
            HS: {"sources": {"hubspot": {"signing_secret": HS_SECRET, "portal_ids": [hubspot.portal_id]}},
                 "connections": {"hubspot": hubspot_connection}},
            PD: {"sources": {"pipedrive": FakePipedrive.source_settings("billflow:dates-pipedrive-password")},
                 "connections": {"pipedrive": pipedrive.connection_settings()}},
        }}
        # The stack's own schedule every six hours (its template parameter; 15 minutes by default): the times of
        # day are honoured to that granularity, and a clock moved by days fires it a few times only.
        with LocalRuntime(ROOT, port=0, connections=connections, tenant=HS, echo=None, fast_retries=True,
                          parameters={"SchedulerSchedule": "cron(0 */6 * * ? *)",
                                      "SweepSchedule": "rate(1 day)"}) as runtime:
            runtime.put_rules(load_rules(folder / "hubspot.yaml", HS) + load_rules(folder / "pipedrive.yaml", PD))
            yield Stack(runtime, hubspot, pipedrive)


def next_at(after: datetime, at: time, zone: ZoneInfo) -> datetime:
    """The first `at` (local time in `zone`) later than `after`."""
    candidate = datetime.combine(after.astimezone(zone).date(), at, tzinfo=zone)
    while candidate <= after:
        candidate = datetime.combine(candidate.date() + timedelta(days=1), at, tzinfo=zone)
    return candidate


def utc(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_records_no_webhook_announced_are_found_in_hubspot_and_pipedrive_and_handled_once(stack: Stack) -> None:
    now = stack.runtime.now()
    # Due 09:00 New York, three days before a date property: more than a day ahead, so reading the date as the
    # instant midnight UTC (the evening before in New York) would fire a day early, inside this test's window.
    renew_due = next_at(now + timedelta(hours=26), time(9), NEW_YORK)
    renewal = renew_due.date() + timedelta(days=3)
    renewed = stack.hubspot_deal(renewal_date=renewal.isoformat())
    renewed_ms = stack.hubspot_deal(renewal_date=str(int(datetime.combine(renewal, time(0), UTC).timestamp() * 1000)))
    not_won = stack.hubspot_deal(stage="appointmentscheduled", renewal_date=renewal.isoformat())
    next_day = stack.hubspot_deal(renewal_date=(renewal + timedelta(days=1)).isoformat())
    # closedate is a datetime: 23:30 in Los Angeles is the next day in UTC; the rule's day is Los Angeles's.
    close_due = next_at(now + timedelta(hours=3), time(17), LOS_ANGELES)
    closing = stack.hubspot_deal(closedate=datetime.combine(close_due.date(), time(23, 30), LOS_ANGELES).isoformat())
    # Pipedrive: expected_close_date is a date; due 08:00 Los Angeles that day.
    pd_due = next_at(now + timedelta(hours=26), time(8), LOS_ANGELES)
    pd_open = stack.pipedrive_deal(pd_due.date())
    pd_won = stack.pipedrive_deal(pd_due.date(), status="won")
    assert stack.hubspot.get("deal", renewed_ms)["properties"]["renewal_date"] == renewal.isoformat()

    fired = stack.fire(max(renew_due, close_due, pd_due) + timedelta(hours=6))

    assert fired and all(f.ok for f in fired), [f.error for f in fired if not f.ok]
    for deal in (renewed, renewed_ms):
        [run] = stack.runs(HS, deal)
        assert run["status"] == "SUCCEEDED", run
        assert run["input"]["transition"] == f"date:renewal_date@{utc(renew_due)}"  # the 9:00 of the right day
        assert stack.notes(f"hs renew {deal}") == [f"hs renew {deal}"]
    assert stack.runs(HS, not_won) == []  # HubSpot's search filtered it out (dealstage EQ closedwon)
    assert stack.runs(HS, next_day) == []  # due a day later, past this window
    [close_run] = [r for r in stack.runs(HS, closing) if r["input"]["rule"]["id"] == "close-call"]
    assert close_run["input"]["transition"] == f"date:closedate@{utc(close_due)}"
    assert stack.notes(f"hs close {closing}") == [f"hs close {closing}"]
    [pd_run] = stack.runs(PD, pd_open)
    assert pd_run["status"] == "SUCCEEDED"
    assert pd_run["input"]["transition"] == f"date:expected_close_date@{utc(pd_due)}"
    assert stack.notes(f"pd closing {pd_open}") == [f"pd closing {pd_open}"]
    assert stack.runs(PD, pd_won) == []  # Pipedrive's status=open parameter left it out
    # What each CRM was asked: HubSpot's search with epoch milliseconds in one filter group, within its
    # limits; Pipedrive's deal list with the status and no empty time parameters.
    searches = [r.json() for r in stack.hubspot.requests if r.path == "/crm/v3/objects/deals/search"]
    renewal_searches = [s for s in searches if any(f["propertyName"] == "renewal_date"
                                                  for f in s["filterGroups"][0]["filters"])]
    assert renewal_searches and all("renewal_date" in s["properties"] for s in renewal_searches)
    bounds = {f["operator"]: f["value"] for f in renewal_searches[-1]["filterGroups"][0]["filters"]
              if f["propertyName"] == "renewal_date"}
    assert set(bounds) == {"GTE", "LT"} and all(v.isdigit() and int(v) % 86_400_000 == 0 for v in bounds.values())
    listed = [r.query for r in stack.pipedrive.requests if r.path == "/api/v2/deals"]
    assert listed and all(q.get("status") == ["open"] and "updated_since" not in q for q in listed)
    assert stack.hubspot.violations == [] and stack.pipedrive.violations == []

    # The window moved on: the next firings start nothing for these records again.
    stack.fire(stack.runtime.now() + timedelta(hours=12))
    for tenant, deal in ((HS, renewed), (HS, renewed_ms), (HS, closing), (PD, pd_open)):
        assert len(stack.runs(tenant, deal)) == 1, deal


def test_a_window_covered_again_after_a_failure_starts_nothing_twice(stack: Stack) -> None:
    """Pipedrive is down for six hours: the scheduler's invocation fails (Lambda retries it twice) and the
    window stays open, so HubSpot's due deal is found by every attempt and the next run: it runs once."""
    now = stack.runtime.now()
    renew_due = next_at(now + timedelta(hours=7), time(9), NEW_YORK)
    deal = stack.hubspot_deal(renewal_date=(renew_due.date() + timedelta(days=3)).isoformat())
    pd_due = next_at(renew_due, time(8), LOS_ANGELES)
    pd_deal = stack.pipedrive_deal(pd_due.date())
    stack.fire(renew_due - timedelta(hours=6, minutes=1))  # the last run before the HubSpot deal falls due
    assert stack.runs(HS, deal) == []

    stack.pipedrive.unavailable = True
    failed = stack.fire(renew_due + timedelta(hours=6))
    stack.pipedrive.unavailable = False
    covered_again = [f for f in failed if f.name.endswith(DUE_SCHEDULE) and f.at >= renew_due]
    assert covered_again and not any(f.ok for f in covered_again)  # each tried three times, the window kept
    [run] = stack.runs(HS, deal)
    assert run["status"] == "SUCCEEDED"
    recovered = stack.fire(max(pd_due, stack.runtime.now()) + timedelta(hours=6))
    assert all(f.ok for f in recovered), [f.error for f in recovered if not f.ok]
    assert len(stack.runs(HS, deal)) == 1 and stack.notes(f"hs renew {deal}") == [f"hs renew {deal}"]
    assert len(stack.runs(PD, pd_deal)) == 1


def test_a_day_the_scheduler_was_off_is_caught_up_once(stack: Stack) -> None:
    now = stack.runtime.now()
    hs_due = next_at(now + timedelta(hours=2), time(9), NEW_YORK)
    pd_due = next_at(now + timedelta(hours=2), time(8), LOS_ANGELES)
    missed_hs = stack.hubspot_deal(renewal_date=(hs_due.date() + timedelta(days=3)).isoformat())
    missed_pd = stack.pipedrive_deal(pd_due.date())
    stack.fire(now + timedelta(minutes=70))  # the last run before the schedule goes off (the due times: later)

    stack.set_due_schedule("DISABLED")
    off = stack.fire(max(hs_due, pd_due) + timedelta(hours=20))  # a whole day without the scheduler
    assert [f for f in off if f.name.endswith(DUE_SCHEDULE)] == []
    assert stack.runs(HS, missed_hs) == [] and stack.runs(PD, missed_pd) == []
    stack.set_due_schedule("ENABLED")
    back = stack.fire(stack.runtime.now() + timedelta(hours=6))

    [first] = [f for f in back if f.name.endswith(DUE_SCHEDULE)]
    assert first.ok, first.error
    summary = first.result
    assert summary["since"] < utc(min(hs_due, pd_due))  # its window reached back to the last run
    [hs_run] = stack.runs(HS, missed_hs)
    [pd_run] = stack.runs(PD, missed_pd)
    assert hs_run["input"]["transition"] == f"date:renewal_date@{utc(hs_due)}"
    assert pd_run["input"]["transition"] == f"date:expected_close_date@{utc(pd_due)}"
    assert stack.notes(f"hs renew {missed_hs}") == [f"hs renew {missed_hs}"]
    assert stack.notes(f"pd closing {missed_pd}") == [f"pd closing {missed_pd}"]
    stack.fire(stack.runtime.now() + timedelta(hours=12))
    assert len(stack.runs(HS, missed_hs)) == 1 and len(stack.runs(PD, missed_pd)) == 1
    assert stack.hubspot.violations == [] and stack.pipedrive.violations == []


def test_a_date_hubspot_delivers_in_epoch_ms_is_indexed_kept_and_fires_once(stack: Stack) -> None:
    """A closedate change arrives as HubSpot sends it (epoch milliseconds, one property), then a change of
    another property: the record's due time stays in the due index, and the index and the search, finding
    the deal both, start one run."""
    now = stack.runtime.now()
    close_due = next_at(now + timedelta(hours=7), time(17), LOS_ANGELES)
    closing = datetime.combine(close_due.date(), time(12), LOS_ANGELES)
    deal = stack.hubspot_deal(closedate=closing.isoformat())
    at = int(now.timestamp() * 1000)
    assert stack.post_hubspot([property_change(int(deal), "closedate", str(int(closing.timestamp() * 1000)),
                                               event_id=4_100_001, occurred_at=at)]) == 202
    assert stack.post_hubspot([property_change(int(deal), "dealname", "Renamed", event_id=4_100_002,
                                               occurred_at=at + 1000)]) == 202

    fired = stack.fire(close_due + timedelta(hours=6))

    [run] = stack.runs(HS, deal)
    assert run["status"] == "SUCCEEDED" and run["input"]["transition"] == f"date:closedate@{utc(close_due)}"
    [firing] = [f for f in fired if f.ok and isinstance(f.result, dict) and run["name"] in f.result.get("started", [])]
    assert firing.result["due"] >= 1  # found in the due index (the dealname delivery left it there)
    assert run["name"] in firing.result["duplicates"]  # and by HubSpot's search, started once
    assert stack.notes(f"hs close {deal}") == [f"hs close {deal}"]
