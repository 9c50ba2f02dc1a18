"""EventBridge Scheduler on the local runtime: schedules fire on a clock tests can advance.

moto keeps Scheduler's schedules (CreateSchedule and friends answer as on AWS) but never fires them. Here:
- the template's `AWS::Scheduler::Schedule` resources are created through the Scheduler API at start-up
  (any such resource: the stack's own due-run, a sweep, whatever a later change adds), so the template's
  and the admin API's schedules are one list, read back from moto;
- `fire_due(now)` evaluates every ENABLED schedule's expression - cron() in its ScheduleExpressionTimezone,
  rate(), at() - over (the last evaluation, now], honouring StartDate and EndDate, and invokes its target
  function with its Input, Scheduler's `<aws.scheduler.scheduled-time>` replaced by the firing time.

Daylight saving as EventBridge Scheduler documents it: a local time the spring-forward change skips does not
fire; one that occurs twice fires once (the first). A firing's handler error is retried like Lambda's
asynchronous invocation (twice), then logged as failed: the schedule moves on.
"""

from __future__ import annotations

import calendar
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from billflow_local.template import Template

SCHEDULE_RESOURCE = "AWS::Scheduler::Schedule"
SCHEDULED_TIME = "<aws.scheduler.scheduled-time>"
MAX_FIRINGS_PER_PASS = 10_000  # a clock advanced by years fires at most this many times per schedule
ASYNC_ATTEMPTS = 3  # Lambda's asynchronous invocation: the first attempt and two retries
MONTHS = {m.upper(): i for i, m in enumerate(calendar.month_abbr) if m}
DAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}

log = logging.getLogger("billflow_local.scheduler")


class ExpressionError(ValueError):
    pass


# ------------------------------------------------------------------------------------------- expressions
def _values(field_text: str, low: int, high: int, names: dict[str, int] | None = None) -> set[int]:
    """The numbers a cron field names: *, a, a-b, a/b, */b, a-b/c, lists; names (JAN, MON) too."""
    found: set[int] = set()

    def number(text: str) -> int:
        key = text.upper()
        if names and key in names:
            return names[key]
        if not text.isdigit():
            raise ExpressionError(f"{text!r} is not a value of a cron field")
        return int(text)

    for part in field_text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            step = number(step_text)
        if part in ("*", "?"):
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = number(a), number(b)
        else:
            start = number(part)
            end = high if step != 1 else start
        found.update(range(start, end + 1, step))
    return {v for v in found if low <= v <= high}


@dataclass(frozen=True)
class Cron:
    """A Scheduler cron(): minutes hours day-of-month month day-of-week year (one of the days is ?)."""

    minutes: frozenset[int]
    hours: frozenset[int]
    dom: str
    months: frozenset[int]
    dow: str
    years: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Cron:
        fields = text.split()
        if len(fields) != 6:
            raise ExpressionError(f"cron({text}) needs six fields")
        minute, hour, dom, month, dow, year = fields
        if (dom == "?") == (dow == "?"):
            raise ExpressionError(f"cron({text}): exactly one of day-of-month and day-of-week is ?")
        return cls(frozenset(_values(minute, 0, 59)), frozenset(_values(hour, 0, 23)), dom,
                   frozenset(_values(month, 1, 12, MONTHS)), dow, frozenset(_values(year, 1970, 2199)))

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months or day.year not in self.years:
            return False
        length = calendar.monthrange(day.year, day.month)[1]
        if self.dow == "?":
            if self.dom == "L":
                return day.day == length
            return day.day in _values(self.dom, 1, 31)
        weekday = (day.weekday() + 1) % 7 + 1  # Scheduler: 1 = Sunday ... 7 = Saturday
        if "#" in self.dow:
            wanted, nth = self.dow.split("#", 1)
            return weekday == _day_number(wanted) and (day.day - 1) // 7 + 1 == int(nth)
        if self.dow.endswith("L") and self.dow != "L":
            return weekday == _day_number(self.dow[:-1]) and day.day + 7 > length
        return weekday in _values(self.dow, 1, 7, DAYS)

    def firings(self, after: datetime, until: datetime, zone: ZoneInfo) -> Iterator[datetime]:
        """Firings in (after, until], UTC: each matching local day's times, DST as Scheduler does it."""
        day = after.astimezone(zone).date()
        last = until.astimezone(zone).date()
        while day <= last:
            if self.day_matches(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        local = datetime.combine(day, time(hour, minute))
                        instant = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
                        if instant.astimezone(zone).replace(tzinfo=None) != local:
                            continue  # skipped by the spring-forward change
                        if after < instant <= until:
                            yield instant
            day += timedelta(days=1)


def _day_number(text: str) -> int:
    return DAYS[text.upper()] if text.upper() in DAYS else int(text)


RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")
UNITS = {"minute": 60, "hour": 3600, "day": 86400}


def expression_firings(schedule: dict[str, Any], after: datetime, until: datetime,
                       created: datetime) -> list[datetime]:
    """A schedule's firings in (after, until] (UTC), within its StartDate and EndDate."""
    expression = str(schedule["ScheduleExpression"]).strip()
    zone = ZoneInfo(schedule.get("ScheduleExpressionTimezone") or "UTC")
    start, end = _instant(schedule.get("StartDate")), _instant(schedule.get("EndDate"))
    if start is not None:
        after = max(after, start - timedelta(microseconds=1))
    if end is not None:
        until = min(until, end - timedelta(microseconds=1))
    if until <= after:
        return []
    found: list[datetime] = []
    if expression.startswith("at(") and expression.endswith(")"):
        local = datetime.fromisoformat(expression[3:-1])
        instant = local.replace(tzinfo=zone).astimezone(UTC)
        return [instant] if after < instant <= until else []
    if expression.startswith("cron(") and expression.endswith(")"):
        for instant in Cron.parse(expression[5:-1]).firings(after, until, zone):
            found.append(instant)
            if len(found) >= MAX_FIRINGS_PER_PASS:
                break
        return found
    rate = RATE.match(expression)
    if rate:
        seconds = int(rate.group(1)) * UNITS[rate.group(2).rstrip("s")]
        anchor = start or created
        steps = max(0, int((after - anchor).total_seconds() // seconds))
        instant = anchor + timedelta(seconds=seconds * steps)
        while instant <= until and len(found) < MAX_FIRINGS_PER_PASS:
            if instant > after:
                found.append(instant)
            instant += timedelta(seconds=seconds)
        return found
    raise ExpressionError(f"{expression!r} is not an at(), cron() or rate() expression")


def _instant(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)


# ------------------------------------------------------------------------------------------- the scheduler
@dataclass
class Firing:
    group: str
    name: str
    at: datetime
    target: str
    ok: bool = True
    error: str = ""
    result: Any = None


@dataclass
class LocalScheduler:
    """Fires the Scheduler schedules moto holds, on the runtime's clock."""

    template: Template
    client: Callable[[str], Any]
    invoke: Callable[[str, Any], Any]
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    fired: list[Firing] = field(default_factory=list)
    _evaluated: dict[tuple[str, str], datetime] = field(default_factory=dict)
    _seen: set[tuple[str, str, datetime]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def provision(self) -> list[str]:
        """Create the template's AWS::Scheduler::Schedule resources through the Scheduler API."""
        scheduler = self.client("scheduler")
        created = []
        for logical_id, resource in self.template.resources_of_type(SCHEDULE_RESOURCE).items():
            props = self.template.resolve(resource.get("Properties") or {})
            target = dict(props["Target"])
            params: dict[str, Any] = {
                "Name": props.get("Name") or self.template.physical_name(logical_id),
                "ScheduleExpression": props["ScheduleExpression"],
                "FlexibleTimeWindow": props.get("FlexibleTimeWindow") or {"Mode": "OFF"},
                "Target": target,
            }
            for key in ("GroupName", "ScheduleExpressionTimezone", "Description", "State", "StartDate",
                        "EndDate"):
                if props.get(key):
                    params[key] = props[key]
            scheduler.create_schedule(**params)
            created.append(params["Name"])
        return created

    def schedules(self) -> list[dict[str, Any]]:
        scheduler = self.client("scheduler")
        listed: list[dict[str, Any]] = []
        token: dict[str, Any] = {}
        while True:
            page = scheduler.list_schedules(**token)
            listed.extend(page.get("Schedules", []))
            if not page.get("NextToken"):
                break
            token = {"NextToken": page["NextToken"]}
        return [scheduler.get_schedule(Name=s["Name"], GroupName=s.get("GroupName") or "default")
                for s in listed]

    def fire_due(self, now: datetime) -> list[Firing]:
        """Fire every firing in (last evaluation, now]; a firing that re-arms its schedule within the same
        window (an at() set for the next firing) fires too."""
        with self._lock:
            done: list[Firing] = []
            for _ in range(MAX_FIRINGS_PER_PASS):
                batch = self._one_pass(now)
                if not batch:
                    break
                done.extend(batch)
            self.fired.extend(done)
            return done

    def _one_pass(self, now: datetime) -> list[Firing]:
        due: list[tuple[datetime, dict[str, Any]]] = []
        for schedule in self.schedules():
            key = (schedule.get("GroupName") or "default", schedule["Name"])
            if schedule.get("State", "ENABLED") != "ENABLED":
                # Scheduler does not fire the times a schedule was disabled once it is enabled again.
                self._evaluated[key] = now
                continue
            created = _instant(schedule.get("CreationDate")) or self.started
            after = self._evaluated.get(key, min(created, self.started))
            try:
                instants = expression_firings(schedule, after, now, created)
            except (ExpressionError, ValueError) as exc:
                log.warning("schedule %s/%s: %s", *key, exc)
                instants = []
            self._evaluated[key] = now
            due.extend((i, schedule) for i in instants if (*key, i) not in self._seen)
        fired = []
        for instant, schedule in sorted(due, key=lambda pair: pair[0]):
            key = (schedule.get("GroupName") or "default", schedule["Name"])
            self._seen.add((*key, instant))
            fired.append(self._fire(schedule, instant))
        if fired:
            # a firing may have re-armed (moved) a schedule: evaluate again from just before its firing
            for firing in fired:
                self._evaluated[(firing.group, firing.name)] = firing.at
        return fired

    def _fire(self, schedule: dict[str, Any], instant: datetime) -> Firing:
        target = schedule["Target"]
        text = str(target.get("Input") or "{}").replace(SCHEDULED_TIME, instant.strftime("%Y-%m-%dT%H:%M:%SZ"))
        firing = Firing(schedule.get("GroupName") or "default", schedule["Name"], instant, target["Arn"])
        payload = json.loads(text)
        for attempt in range(1, ASYNC_ATTEMPTS + 1):
            try:
                firing.result = self.invoke(target["Arn"], payload)
                firing.ok, firing.error = True, ""
                break
            except Exception as exc:  # an asynchronous invocation's error: retried, then recorded
                firing.ok, firing.error = False, f"{type(exc).__name__}: {exc} (attempt {attempt})"
        if not firing.ok:
            log.warning("schedule %s/%s at %s failed: %s", firing.group, firing.name, instant, firing.error)
        return firing
