"""Recurring schedules and date rules over every record, against moto (Scheduler, DynamoDB, Step Functions)
and the Twenty stand-in: applied through the admin API, set as EventBridge Scheduler schedules, fired once
per firing time, expiring after N runs or on a date, the eleventh refused; date rules finding records no
webhook ever told billflow about, once per record however the scheduler's windows overlap."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import billflow.aws
import boto3
import pytest
from billflow.logic import schedule as schedule_logic
from billflow.logic.schedule import run_scheduler
from billflow.logic.schedules import fire_schedule
from billflow.models.rules import Rule
from billflow.storage.counters import get_checkpoint
from billflow.storage.executions import get_executions
from billflow.storage.rules import get_rule_store
from billflow.storage.schedules import get_schedule_store, get_scheduler_api

from billflow_local.process import patched_environment, reset_billflow_caches
from tests.fakes.twenty_server import FakeTwenty
from tests.integration.conftest import AdminStack

ROOT = Path(__file__).resolve().parents[2]
TENANT = "acme"
GROUP = f"billflow-test-{TENANT}"
NEW_YORK = ZoneInfo("America/New_York")

DIGEST_RULE = {"id": "digest", "source": "twenty", "object": "opportunity",
               "actions": [{"type": "notification", "options": {"message": "monthly digest"}}]}
RENEWAL_RULE = {"id": "renewals", "source": "twenty", "object": "opportunity",
                "criteria": [{"field": "stage", "comparator": "is", "value": "CUSTOMER"}],
                "actions": [{"type": "notification", "options": {"message": "renew {{ record.name }}"}}]}
DATE_RULE = {"id": "close-reminder", "source": "twenty", "object": "opportunity",
             "trigger": {"type": "date", "field": "closeDate", "offset_days": -7, "at": "09:00",
                         "timezone": "America/New_York"},
             "actions": [{"type": "notification", "options": {"message": "closing {{ record.name }}"}}]}


def _scheduler_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("billflow_scheduler_app_test",
                                                  ROOT / "functions" / "scheduler" / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["billflow_scheduler_app_test"] = module
    spec.loader.exec_module(module)
    return module


class Context:
    function_name = "SchedulerFunction"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:SchedulerFunction"
    aws_request_id = "test"


@pytest.fixture
def stack() -> Iterator[AdminStack]:
    with patched_environment({
        "SCHEDULE_GROUP_PREFIX": "billflow-test",
        "SCHEDULER_FUNCTION_ARN": "arn:aws:lambda:us-east-1:123456789012:function:SchedulerFunction",
        "SCHEDULES_ROLE_ARN": "arn:aws:iam::123456789012:role/billflow-test-SchedulesRole",
        "ALLOW_LOOPBACK_TARGETS": "true",
    }), AdminStack() as admin:
        reset_billflow_caches()
        for rule in (DIGEST_RULE, RENEWAL_RULE, DATE_RULE):
            get_rule_store().put(Rule.model_validate({**rule, "tenant": TENANT}))
        yield admin


@pytest.fixture
def twenty(stack: AdminStack) -> Iterator[FakeTwenty]:
    with FakeTwenty(stages=("NEW", "PROPOSAL", "CUSTOMER")) as fake:
        stack.put_connection(TENANT, "twenty", fake.connection_settings())
        yield fake


def schedule(schedule_id: str, **fields: Any) -> dict[str, Any]:
    start = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT09:00")
    return {"id": schedule_id, "rule": "digest", "timezone": "Europe/London", "starts": start,
            "repeat": {"every": "month", "day": "last"}, **fields}


def scheduler_schedule(name: str) -> dict[str, Any]:
    found: dict[str, Any] = boto3.client("scheduler", region_name="us-east-1").get_schedule(
        Name=name, GroupName=GROUP)
    return found


# ------------------------------------------------------------------------------------------- admin API
def test_apply_sets_scheduler_schedules_and_plan_says_cron_or_at(stack: AdminStack) -> None:
    documents = [
        schedule("month-end"),
        schedule("every-four-months", repeat={"every": "month", "interval": 5, "nth": "last",
                                              "weekday": "friday"}, ends={"after": 6}),
    ]
    plan = stack.ok("POST", f"/admin/tenants/{TENANT}/schedules/plan", {"schedules": documents})["plan"]
    assert plan["create"] == ["every-four-months", "month-end"] or sorted(plan["create"]) == [
        "every-four-months", "month-end"]
    assert plan["how"]["month-end"].startswith("cron(0 9 L * ? *) in Europe/London")
    assert plan["how"]["every-four-months"].startswith("at(")
    assert "re-armed by billflow after each firing" in plan["how"]["every-four-months"]
    assert boto3.client("scheduler", region_name="us-east-1").list_schedules()["Schedules"] == []

    stack.ok("POST", f"/admin/tenants/{TENANT}/schedules/apply", {"schedules": documents})
    cron = scheduler_schedule("month-end")
    assert cron["ScheduleExpression"] == "cron(0 9 L * ? *)"
    assert cron["ScheduleExpressionTimezone"] == "Europe/London"
    assert cron["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert cron["Target"]["Arn"].endswith(":function:SchedulerFunction")
    assert '"time": "<aws.scheduler.scheduled-time>"' in cron["Target"]["Input"]
    at = scheduler_schedule("every-four-months")
    assert at["ScheduleExpression"].startswith("at(") and at["ScheduleExpressionTimezone"] == "UTC"

    again = stack.ok("POST", f"/admin/tenants/{TENANT}/schedules/plan", {"schedules": documents})["plan"]
    assert sorted(again["unchanged"]) == ["every-four-months", "month-end"]
    listed = stack.ok("GET", f"/admin/tenants/{TENANT}/schedules")["schedules"]
    month_end = next(s for s in listed if s["schedule"]["id"] == "month-end")
    assert len(month_end["next"]) == 5
    first = datetime.fromisoformat(month_end["next"][0]["local"])
    assert (first.hour, first.minute) == (9, 0) and (first + timedelta(days=1)).day == 1

    pruned = stack.ok("POST", f"/admin/tenants/{TENANT}/schedules/apply",
                      {"schedules": documents[:1], "prune": True})["plan"]
    assert pruned["delete"] == ["every-four-months"]
    with pytest.raises(boto3.client("scheduler", region_name="us-east-1").exceptions.ResourceNotFoundException):
        scheduler_schedule("every-four-months")


def test_the_eleventh_schedule_is_refused(stack: AdminStack) -> None:
    for n in range(10):
        stack.ok("POST", f"/admin/tenants/{TENANT}/schedules", schedule(f"s{n}"))
    status, answer = stack.call("POST", f"/admin/tenants/{TENANT}/schedules", schedule("s10"))
    assert status == 422
    assert "already has 10 schedules" in answer["message"]
    status, answer = stack.call("POST", f"/admin/tenants/{TENANT}/schedules/apply",
                                {"schedules": [schedule(f"t{n}") for n in range(11)], "prune": True})
    assert status == 422 and any("at most 10" in p for p in answer["details"]["problems"])
    assert len(get_schedule_store().all(TENANT)) == 10


def test_bad_schedules_are_refused_with_what_to_fix(stack: AdminStack) -> None:
    far = (datetime.now(UTC) + timedelta(days=400)).strftime("%Y-%m-%dT09:00")
    status, answer = stack.call("POST", f"/admin/tenants/{TENANT}/schedules/plan", {"schedules": [
        schedule("far", starts=far), schedule("no-rule", rule="nope"),
        schedule("never", repeat={"every": "month", "interval": 12, "day": 31},
                 starts=f"{datetime.now(UTC).year + 1}-02-01T09:00"),
        schedule("bad", repeat={"every": "week", "nth": 2})]})
    assert status == 400
    problems = "\n".join(answer["details"]["problems"])
    assert "schedule far: starts:" in problems and "more than a year ahead" in problems
    assert "schedule no-rule: rule: no rule 'nope'" in problems
    assert "schedule never: repeat: this recurrence never fires" in problems
    assert "schedule bad: repeat:" in problems


# ------------------------------------------------------------------------------------------- firing
def fire(schedule_id: str, firing: datetime) -> dict[str, Any]:
    answer: dict[str, Any] = _scheduler_app().handler(
        {"kind": "schedule", "tenant": TENANT, "schedule": schedule_id,
         "time": firing.strftime("%Y-%m-%dT%H:%M:%SZ")}, Context())
    return answer


def test_a_firing_runs_once_and_an_at_schedule_is_rearmed_until_its_last_run(stack: AdminStack) -> None:
    start = datetime.now(UTC) + timedelta(days=1)
    document = schedule("fortnightly", timezone="UTC", starts=start.strftime("%Y-%m-%dT10:00"),
                        repeat={"every": "week", "interval": 2}, ends={"after": 2})
    stack.ok("POST", f"/admin/tenants/{TENANT}/schedules/apply", {"schedules": [document]})
    first = datetime.combine(start.date(), time(10), tzinfo=UTC)
    assert scheduler_schedule("fortnightly")["ScheduleExpression"] == f"at({first:%Y-%m-%dT%H:%M:%S})"

    fired = fire("fortnightly", first)
    assert len(fired["started"]) == 1 and fired["records"] == 1
    second = first + timedelta(weeks=2)
    assert fired["rearmed"] == f"at({second:%Y-%m-%dT%H:%M:%S})"
    assert scheduler_schedule("fortnightly")["ScheduleExpression"] == fired["rearmed"]
    repeated = fire("fortnightly", first)  # Scheduler delivers at least once: the same firing again
    assert repeated["started"] == [] and repeated["duplicates"] == fired["started"]

    last = fire("fortnightly", second)
    assert len(last["started"]) == 1 and last["rearmed"] is None  # ends after 2 runs: the schedule is gone
    with pytest.raises(boto3.client("scheduler", region_name="us-east-1").exceptions.ResourceNotFoundException):
        scheduler_schedule("fortnightly")
    assert len(stack.executions()) == 2
    odd = fire("fortnightly", first + timedelta(days=1))
    assert odd["started"] == [] and "not one of its firings" in odd["skipped"]


def test_cron_schedules_end_on_their_date_or_after_n_runs(stack: AdminStack) -> None:
    start = datetime.now(UTC) + timedelta(days=2)
    on = (start + timedelta(days=10)).date()
    stack.ok("POST", f"/admin/tenants/{TENANT}/schedules/apply", {"schedules": [
        schedule("weekdays", timezone="America/New_York", starts=start.strftime("%Y-%m-%dT08:30"),
                 repeat={"every": "day", "skip_weekends": True}, ends={"on": on.isoformat()}),
        schedule("three-months", timezone="UTC", starts=start.strftime("%Y-%m-%dT07:00"),
                 repeat={"every": "month", "day": 1}, ends={"after": 3})]})
    weekdays = scheduler_schedule("weekdays")
    assert weekdays["ScheduleExpression"] == "cron(30 8 ? * MON-FRI *)"
    # inclusive: the end is the start of the next local day
    assert weekdays["EndDate"] == datetime.combine(on + timedelta(days=1), time(0), tzinfo=NEW_YORK)
    three = scheduler_schedule("three-months")
    third = date(start.year + (start.month + 2) // 12, (start.month + 2) % 12 + 1, 1)
    assert three["EndDate"] == datetime.combine(third, time(7, 1), tzinfo=UTC)


def test_a_query_schedule_runs_the_rule_for_every_record_the_crm_finds(stack: AdminStack,
                                                                       twenty: FakeTwenty) -> None:
    won = [twenty.add_opportunity(f"Renewal {n}", stage="CUSTOMER") for n in range(7)]
    twenty.add_opportunity("Still new", stage="NEW")
    stack.ok("POST", f"/admin/tenants/{TENANT}/schedules/apply", {"schedules": [schedule(
        "renewal-invoices", rule="renewals", query={"filters": [{"field": "stage", "op": "eq",
                                                                 "value": "CUSTOMER"}]})]})
    answer = stack.ok("POST", f"/admin/tenants/{TENANT}/schedules/renewal-invoices/run",
                      {"firing": "2026-03-31T09:00:00Z"})
    assert answer["records"] == 7 and len(answer["started"]) == 7
    again = stack.ok("POST", f"/admin/tenants/{TENANT}/schedules/renewal-invoices/run",
                     {"firing": "2026-03-31T09:00:00Z"})
    assert again["started"] == [] and sorted(again["duplicates"]) == sorted(answer["started"])
    names = {e["name"] for e in stack.executions()}
    assert len(names) == 7
    inputs = [boto3.client("stepfunctions", region_name="us-east-1").describe_execution(
        executionArn=e["executionArn"])["input"] for e in stack.executions()]
    assert {r["id"] for r in won} == {json.loads(i)["event"]["record_id"] for i in inputs}
    status, _ = stack.call("POST", f"/admin/tenants/{TENANT}/schedules/nope/run", {})
    assert status == 404


# ------------------------------------------------------------------------------------------- date rules
def due_of(close: date) -> datetime:
    return datetime.combine(close - timedelta(days=7), time(9), tzinfo=NEW_YORK).astimezone(UTC)


def test_a_date_rule_finds_records_no_webhook_told_of_once_per_record(stack: AdminStack,
                                                                      twenty: FakeTwenty) -> None:
    close = (datetime.now(UTC) + timedelta(days=20)).date()
    # Twenty keeps a date-only closeDate at midnight UTC: it is due on close - 7 days at 09:00 New York,
    # not on the evening before (which the same instant is in New York).
    deal = twenty.add_opportunity("Never seen", stage="CUSTOMER", close_date=f"{close}T00:00:00.000Z")
    twenty.add_opportunity("Later", stage="CUSTOMER",
                           close_date=f"{close + timedelta(days=10)}T00:00:00.000Z")
    due = due_of(close)
    executions = get_executions()

    early = run_scheduler(due - timedelta(minutes=30), digests=False)
    assert early.started == [] and early.errors == []
    fired = run_scheduler(due + timedelta(minutes=15), digests=False)
    assert len(fired.started) == 1, fired.summary()
    assert fired.searched == {f"{TENANT}/close-reminder": 1}  # the search asks for the window's dates only
    described = executions.describe(fired.started[0])
    assert described is not None and deal["id"] in described["input"]
    assert f"date:closeDate@{due:%Y-%m-%dT%H:%M:%SZ}" in described["input"]

    # The scheduler runs again over an overlapping window (a retry, a second invocation): nothing new.
    class Rewound:
        def read(self) -> datetime:
            return due - timedelta(hours=2)

        def advance(self, until: datetime) -> None:
            pass

    asked: list[str] = []
    sfn = billflow.aws.client("stepfunctions")
    for operation in ("DescribeExecution", "StartExecution"):
        sfn.meta.events.register(f"provide-client-params.sfn.{operation}",
                                 lambda model, **_: asked.append(model.name))
    repeated = run_scheduler(due + timedelta(minutes=20), digests=False, checkpoint=Rewound())  # type: ignore[arg-type]
    assert repeated.started == [] and repeated.duplicates == fired.started
    assert len(stack.executions()) == 1
    assert asked == []  # this container started that run: Step Functions is not asked about it again


def test_a_date_rule_catches_up_the_day_the_scheduler_missed(stack: AdminStack, twenty: FakeTwenty) -> None:
    close = (datetime.now(UTC) + timedelta(days=30)).date()
    twenty.add_opportunity("Missed day", stage="CUSTOMER", close_date=f"{close}T00:00:00.000Z")
    due = due_of(close)
    before = run_scheduler(due - timedelta(hours=6), digests=False)
    assert before.started == []
    assert get_checkpoint().read() == due - timedelta(hours=6)
    # The scheduler is down for a day; its next run covers the whole missed window.
    after = run_scheduler(due + timedelta(days=1), digests=False)
    assert len(after.started) == 1 and after.since == (due - timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_crm_search_failing_leaves_the_window_open(stack: AdminStack, twenty: FakeTwenty) -> None:
    close = (datetime.now(UTC) + timedelta(days=40)).date()
    twenty.add_opportunity("Outage", stage="CUSTOMER", close_date=f"{close}T00:00:00.000Z")
    due = due_of(close)
    run_scheduler(due - timedelta(hours=1), digests=False)
    twenty.fail_next(503, times=1)
    failed = run_scheduler(due + timedelta(minutes=10), digests=False)
    assert failed.started == [] and failed.errors and "CRM search" in failed.errors[0]
    assert get_checkpoint().read() == due - timedelta(hours=1)  # not moved: the next run redoes the window
    redone = run_scheduler(due + timedelta(minutes=25), digests=False)
    assert len(redone.started) == 1, redone.summary()


def test_a_window_holding_more_records_than_one_search_reads_is_searched_in_halves(
    stack: AdminStack, twenty: FakeTwenty, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(schedule_logic, "MAX_SEARCH_RECORDS", 3)  # 5,000 on a real CRM: the same halving
    close = (datetime.now(UTC) + timedelta(days=50)).date()
    for shift in range(-2, 3):  # two deals on each day of the search's span (the window's dates +- 2 days)
        day = close + timedelta(days=shift)
        for number in (1, 2):
            twenty.add_opportunity(f"Busy {shift} {number}", stage="CUSTOMER", close_date=f"{day}T00:00:00.000Z")
    due = due_of(close)
    run_scheduler(due - timedelta(hours=1), digests=False)

    busy = run_scheduler(due + timedelta(minutes=10), digests=False)

    assert busy.errors == [] and len(busy.started) == 2, busy.summary()  # the two deals closing that day
    assert busy.searched[f"{TENANT}/close-reminder"] > 10  # the span, then its halves: every record read
    assert get_checkpoint().read() == due + timedelta(minutes=10)  # the window moved on


def test_one_day_holding_more_records_than_one_search_reads_keeps_the_window_open(
    stack: AdminStack, twenty: FakeTwenty, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(schedule_logic, "MAX_SEARCH_RECORDS", 3)
    close = (datetime.now(UTC) + timedelta(days=60)).date()
    for number in range(3):
        twenty.add_opportunity(f"Same day {number}", stage="CUSTOMER", close_date=f"{close}T00:00:00.000Z")

    crowded = run_scheduler(due_of(close) + timedelta(minutes=10), digests=False)

    assert crowded.started == []
    assert crowded.errors == [f"{TENANT}/close-reminder: more than 3 records with closeDate on one day ({close}); "
                              f"the window stays open"]
    assert get_checkpoint().read() is None  # not advanced: the next run redoes the window


def test_fire_schedule_skips_a_deleted_or_inactive_schedule(stack: AdminStack) -> None:
    stack.ok("POST", f"/admin/tenants/{TENANT}/schedules", schedule("gone"))
    stack.ok("DELETE", f"/admin/tenants/{TENANT}/schedules/gone")
    report = fire_schedule(TENANT, "gone", datetime.now(UTC), datetime.now(UTC),
                           schedule_store=get_schedule_store(), rule_store=get_rule_store(),
                           executions=get_executions(), scheduler=get_scheduler_api())
    assert report.started == [] and "no such schedule" in report.skipped
