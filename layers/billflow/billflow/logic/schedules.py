"""Recurring schedules: checked, planned and applied as code beside the rules, set as EventBridge Scheduler
schedules, listed with their next firings, and fired (by Scheduler, the local runtime's clock, or by hand).

A firing runs the schedule's rule for each record of its CRM query (the CRM's own search, paged), or once
(a digest). Every run is named after (rule, record, schedule, firing time), so a firing delivered twice,
retried, or run again by hand at the same firing time starts nothing new: Step Functions refuses the name.

A recurrence that one Scheduler cron() expression says is set as that expression, in the schedule's time
zone, with its start and end; any other is a one-time at() schedule for the next firing, which the firing
re-arms for the one after (plan says which, and why).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ValidationError

from billflow.errors import InvalidRequest, NotFound
from billflow.models.admin import SchedulePlan
from billflow.models.events import GENERIC_SOURCES, CrmEvent
from billflow.models.run import LogKeys, RunState, utc_text
from billflow.models.schedules import MAX_SCHEDULES_PER_TENANT, MAX_START_AHEAD_DAYS, Schedule
from billflow.rules.calendar import (
    describe,
    firings,
    is_firing,
    local_to_utc,
    next_firings,
    scheduler_expression,
)
from billflow.storage import keys
from billflow.storage.executions import Executions
from billflow.storage.rules import RuleStore
from billflow.storage.schedules import SchedulerApi, SchedulerSchedule, ScheduleStore

NEXT_FIRINGS_SHOWN = 5


class TooManySchedules(InvalidRequest):
    """A tenant has at most MAX_SCHEDULES_PER_TENANT schedules (Zoho Books' own limit)."""

    http_status = 422


# ------------------------------------------------------------------------------------------- checking
def check_schedule_documents(
    documents: list[Any], rule_ids: set[str], now: datetime
) -> tuple[list[Schedule], list[str]]:
    """Valid schedules, and every problem as 'schedule ID: FIELD: message'."""
    schedules: list[Schedule] = []
    problems: list[str] = []
    seen: set[str] = set()
    for doc in documents:
        if isinstance(doc, BaseModel):
            doc = json.loads(doc.model_dump_json())
        name = doc.get("id") if isinstance(doc, dict) else None
        label = f"schedule {name}" if name else "schedule"
        schedule, found = check_schedule_document(doc, rule_ids, now)
        problems.extend(f"{label}: {where}: {message}" for where, message in found)
        if isinstance(name, str) and name in seen:
            problems.append(f"{label}: id: used twice")
        if isinstance(name, str):
            seen.add(name)
        if schedule is not None and not found:
            schedules.append(schedule)
    if len(seen) > MAX_SCHEDULES_PER_TENANT:
        problems.append(f"schedules: {len(seen)} given; a tenant has at most {MAX_SCHEDULES_PER_TENANT} "
                        f"(delete or combine some)")
    return schedules, problems


def check_schedule_document(
    doc: Any, rule_ids: set[str], now: datetime
) -> tuple[Schedule | None, list[tuple[str, str]]]:
    """One schedule document: the schedule (None when it does not fit the model) and (field, message) pairs."""
    try:
        schedule = Schedule.model_validate(doc)
    except ValidationError as exc:
        return None, [(".".join(str(p) for p in error["loc"]) or "(document)",
                       str(error["msg"]).removeprefix("Value error, ")) for error in exc.errors()]
    found = []
    for problem in schedule_problems(schedule, rule_ids, now):
        where, _, message = problem.partition(": ")
        found.append((where, message))
    return schedule, found


def schedule_problems(schedule: Schedule, rule_ids: set[str], now: datetime) -> list[str]:
    problems = []
    start = local_to_utc(schedule.start, ZoneInfo(schedule.timezone)) or schedule.start.replace(
        tzinfo=ZoneInfo(schedule.timezone)).astimezone(UTC)
    if start > now + timedelta(days=MAX_START_AHEAD_DAYS):
        problems.append(f"starts: {schedule.starts} is more than a year ahead; start it within "
                        f"{MAX_START_AHEAD_DAYS} days")
    if not next_firings(schedule, 1):
        problems.append("repeat: this recurrence never fires (e.g. day 31 of a month that has 30, every "
                        "12 months; use day: last)")
    if schedule.ends.on is not None and schedule.ends.on < schedule.start.date():
        problems.append("ends.on: before the start")
    if rule_ids and schedule.rule not in rule_ids:
        problems.append(f"rule: no rule {schedule.rule!r} (in the documents or stored)")
    return problems


def parse_schedules(tenant: str, documents: list[Any], rule_ids: set[str], now: datetime) -> list[Schedule]:
    schedules, problems = check_schedule_documents(documents, rule_ids, now)
    if problems:
        if len({s.get("id") if isinstance(s, dict) else None for s in documents}) > MAX_SCHEDULES_PER_TENANT:
            raise TooManySchedules("too many schedules", problems=problems)
        raise InvalidRequest("schedule documents are not valid", problems=problems)
    return [s.model_copy(update={"tenant": tenant}) for s in schedules]


def schedule_document(schedule: Schedule) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(schedule.model_dump_json(exclude={"tenant"}))
    return data


# ------------------------------------------------------------------------------------------- plan / apply
def how_it_fires(schedule: Schedule, now: datetime) -> str:
    """What plan says about a schedule: its Scheduler expression, or why billflow re-arms at()."""
    if not schedule.active:
        return "inactive: no Scheduler schedule"
    expression = scheduler_expression(schedule, now)
    if expression is None:
        return "no firing left: no Scheduler schedule"
    if expression.kind == "cron":
        return f"{expression.expression} in {expression.timezone} ({describe(schedule)})"
    return (f"{expression.expression} UTC, re-armed by billflow after each firing ({describe(schedule)}; "
            f"one cron expression cannot say it: {expression.why_at})")


def plan_schedules(store: ScheduleStore, tenant: str, schedules: list[Schedule], prune: bool,
                   now: datetime) -> SchedulePlan:
    current = {s.id: s for s in store.all(tenant)}
    plan = SchedulePlan()
    for schedule in schedules:
        plan.how[schedule.id] = how_it_fires(schedule, now)
        existing = current.get(schedule.id)
        if existing is None:
            plan.create.append(schedule.id)
            continue
        before, after = schedule_document(existing), schedule_document(schedule)
        before.pop("version", None)
        after.pop("version", None)
        differing = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        if differing:
            plan.change.append(schedule.id)
            plan.fields[schedule.id] = differing
        else:
            plan.unchanged.append(schedule.id)
    missing = sorted(sid for sid in current if sid not in {s.id for s in schedules})
    if prune:
        plan.delete = missing
    else:
        plan.untracked = missing
    kept = len(schedules) + len(plan.untracked)
    if kept > MAX_SCHEDULES_PER_TENANT:
        raise TooManySchedules(
            f"tenant {tenant} would have {kept} schedules; at most {MAX_SCHEDULES_PER_TENANT} "
            f"(delete some, or apply with prune)", schedules=sorted([*plan.untracked, *(s.id for s in schedules)]))
    return plan


def apply_schedules(store: ScheduleStore, scheduler: SchedulerApi, tenant: str, schedules: list[Schedule],
                    prune: bool, now: datetime) -> SchedulePlan:
    plan = plan_schedules(store, tenant, schedules, prune, now)
    current = {s.id: s for s in store.all(tenant)}
    for schedule in schedules:
        if schedule.id in plan.create or schedule.id in plan.change:
            version = current[schedule.id].version + 1 if schedule.id in current else 1
            stored = schedule.model_copy(update={"tenant": tenant, "version": version})
            store.put(stored)
            arm(scheduler, stored, now)
    for schedule_id in plan.delete:
        scheduler.delete(tenant, schedule_id)
        store.delete(tenant, schedule_id)
    return plan


def create_schedule(store: ScheduleStore, scheduler: SchedulerApi, tenant: str, schedule: Schedule,
                    now: datetime) -> Schedule:
    """One more schedule (the admin API's create): refused when it would be the eleventh."""
    current = store.all(tenant)
    if any(s.id == schedule.id for s in current):
        raise InvalidRequest(f"schedule {schedule.id!r} already exists; apply the documents to change it")
    if len(current) >= MAX_SCHEDULES_PER_TENANT:
        raise TooManySchedules(
            f"tenant {tenant} already has {len(current)} schedules, the most a tenant may have; delete one "
            f"before adding {schedule.id!r}", schedules=[s.id for s in current])
    stored = schedule.model_copy(update={"tenant": tenant, "version": 1})
    store.put(stored)
    arm(scheduler, stored, now)
    return stored


def delete_schedule(store: ScheduleStore, scheduler: SchedulerApi, tenant: str, schedule_id: str) -> None:
    if store.get(tenant, schedule_id) is None:
        raise NotFound(f"tenant {tenant} has no schedule {schedule_id!r}")
    scheduler.delete(tenant, schedule_id)
    store.delete(tenant, schedule_id)


def arm(scheduler: SchedulerApi, schedule: Schedule, now: datetime, after: datetime | None = None) -> str | None:
    """Set the schedule's Scheduler schedule for the firings after `after` (default now); removed when
    inactive or finished. The expression set, or None."""
    expression = scheduler_expression(schedule, after or now) if schedule.active else None
    if expression is None:
        scheduler.delete(schedule.tenant, schedule.id)
        return None
    scheduler.put(schedule.tenant, schedule.id, SchedulerSchedule(
        expression.expression, expression.timezone, expression.start, expression.end), describe(schedule))
    return expression.expression


# ------------------------------------------------------------------------------------------- listing
def list_schedules(store: ScheduleStore, tenant: str, now: datetime) -> list[dict[str, Any]]:
    """Every schedule of the tenant with its next five firings, in its time zone and in UTC."""
    listed = []
    for schedule in store.all(tenant):
        zone = ZoneInfo(schedule.timezone)
        upcoming = next_firings(schedule, NEXT_FIRINGS_SHOWN, after=now) if schedule.active else []
        listed.append({
            "schedule": schedule_document(schedule), "describe": describe(schedule),
            "fires_by": how_it_fires(schedule, now),
            "next": [{"local": f.astimezone(zone).isoformat(), "utc": utc_text(f)} for f in upcoming],
        })
    return listed


# ------------------------------------------------------------------------------------------- firing
@dataclass
class FiringReport:
    tenant: str
    schedule: str
    firing: str
    started: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    skipped: str = ""
    records: int = 0
    rearmed: str | None = None
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "schedule": self.schedule, "firing": self.firing,
                "started": self.started, "duplicates": self.duplicates, "skipped": self.skipped,
                "records": self.records, "rearmed": self.rearmed, "errors": self.errors}


def latest_firing(schedule: Schedule, now: datetime) -> datetime | None:
    """The schedule's most recent firing at or before now (what `schedules run` fires by default)."""
    latest = None
    for instant in firings(schedule):
        if instant > now:
            break
        latest = instant
    return latest


def fire_schedule(
    tenant: str, schedule_id: str, firing: datetime, now: datetime, *, manual: bool = False,
    schedule_store: ScheduleStore, rule_store: RuleStore, executions: Executions,
    scheduler: SchedulerApi | None = None,
) -> FiringReport:
    """Run a schedule's rule for one firing: over its query's records, or once; then re-arm an at()."""
    firing = firing.astimezone(UTC).replace(second=0, microsecond=0)
    report = FiringReport(tenant=tenant, schedule=schedule_id, firing=utc_text(firing))
    schedule = schedule_store.get(tenant, schedule_id)
    if schedule is None:
        report.skipped = "no such schedule (deleted since it was set)"
        return report
    if not schedule.active:
        report.skipped = "inactive"
        return report
    if not manual and not is_firing(schedule, firing):
        report.skipped = f"{utc_text(firing)} is not one of its firings (changed since it was set)"
    else:
        _run_firing(schedule, firing, now, report, rule_store, executions)
    if scheduler is not None and not manual:
        report.rearmed = rearm(scheduler, schedule, now, after=max(firing, now))
    return report


def rearm(scheduler: SchedulerApi, schedule: Schedule, now: datetime, after: datetime) -> str | None:
    """After a firing: a one-time at() moves on to the next firing; a schedule with none left is deleted; a
    cron() is left as it is (its EndDate stops it). The at() expression set, or None."""
    expression = scheduler_expression(schedule, after)
    if expression is None:
        scheduler.delete(schedule.tenant, schedule.id)
        return None
    if expression.kind != "at":
        return None
    return arm(scheduler, schedule, now, after)


def _run_firing(schedule: Schedule, firing: datetime, now: datetime, report: FiringReport,
                rule_store: RuleStore, executions: Executions) -> None:
    rule = rule_store.get(schedule.tenant, schedule.rule)
    if rule is None or not rule.active:
        report.skipped = f"rule {schedule.rule!r} is {'missing' if rule is None else 'inactive'}"
        return
    settings = rule_store.tenant_settings(schedule.tenant)
    transition = f"schedule:{schedule.id}@{utc_text(firing)}"
    if schedule.query is None:
        record = {"id": f"schedule-{schedule.id}", "schedule": schedule.id, "firing": utc_text(firing)}
        _start(executions, _run_state(schedule, rule, record, transition, firing, now, settings,
                                      refresh=False), report)
        report.records = 1
        return
    from billflow.connectors import get_crm  # deferred: only query schedules reach a CRM
    from billflow.connectors.base import RecordFilter, RecordQuery, iter_records
    from billflow.storage.secrets import get_secret_store

    connection = get_secret_store().connection(schedule.tenant, rule.source)
    query = RecordQuery(object_name=rule.object,
                        filters=tuple(RecordFilter(f.field, f.op, f.value) for f in schedule.query.filters))
    for record in iter_records(get_crm(connection.type), connection, query, schedule.query.max_records):
        report.records += 1
        try:
            _start(executions, _run_state(schedule, rule, record, transition, firing, now, settings,
                                          refresh=False), report)
        except Exception as exc:  # one record must not hold up the others; a retry starts only the rest
            report.errors.append(f"{record.get('id')}: {type(exc).__name__}: {exc}")
    if report.records >= schedule.query.max_records:
        report.errors.append(f"the query matched at least {schedule.query.max_records} records; the rest were "
                             f"not run (narrow the query)")


def _start(executions: Executions, state: RunState, report: FiringReport) -> None:
    if executions.start_run(state):
        report.started.append(state.execution_name)
    else:
        report.duplicates.append(state.execution_name)


def _run_state(schedule: Schedule, rule: Any, record: dict[str, Any], transition: str, firing: datetime,
               now: datetime, tenant_settings: Any, refresh: bool) -> RunState:
    from billflow.settings import get_settings

    settings = get_settings()
    record_id = str(record.get("id") or f"schedule-{schedule.id}")
    event = CrmEvent(
        event_id=f"{transition}:{record_id}", tenant=schedule.tenant, source=rule.source, object=rule.object,
        action="updated", record_id=record_id, record=record, changed_fields=None, occurred_at=firing,
        received_at=now,
    )
    record_key = keys.record_pk(schedule.tenant, rule.source, rule.object, record_id)
    execution_key = keys.execution_key(schedule.tenant, rule.id, record_key, transition)
    return RunState(
        tenant=schedule.tenant, execution_key=execution_key,
        execution_name=keys.execution_name(rule.id, execution_key), transition=transition, rule=rule,
        actions=[], event=event, daily_limits=tenant_settings.daily_limits,
        default_daily_limit=settings.default_daily_limit, usage_alert=tenant_settings.usage_alert,
        log=LogKeys(rule_key=keys.log_rule_key(schedule.tenant, rule.id), record_key=record_key,
                    expires_at=str(int(time.time()) + settings.log_retention_days * 86400)),
        blocks=list(range(len(rule.blocks))), recheck=True,
        refresh_record=refresh and rule.source not in GENERIC_SOURCES, trigger_at=utc_text(firing),
    )
