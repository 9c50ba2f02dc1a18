"""When a recurring schedule fires: pure date arithmetic, no AWS (README: "Schedules").

Decisions (the README says the same to users):
- A firing is the schedule's time of day on a day the recurrence names, in its time zone, at or after
  `starts` (a start later than that day's firing time fires first on the next matching day).
- The interval counts from the start: every 2 weeks counts weeks from the start's week (weeks begin on
  Monday), every 4 months from the start's month, every 2 days from the start day; days skipped for
  weekends are skipped, not moved.
- A day that a month lacks is skipped, as in EventBridge Scheduler's cron and iCalendar: day 31 does not
  fire in April, 29 February fires in leap years only, a fifth Monday only in months that have one.
  `day: last` is the last day of every month (Zoho's "last day of each month"); `nth: last` the last
  weekday of that name.
- Daylight saving, as EventBridge Scheduler documents for schedules with a time zone: a time the
  spring-forward change skips does not fire that day; a time that occurs twice on the fall-back day fires
  once, at its first occurrence (the earlier instant).
- `ends.after: N` counts firings that happen (a DST-skipped or missing day is no firing); `ends.on` is
  inclusive (a firing on that local date still happens).
"""

from __future__ import annotations

import calendar as month_calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from billflow.models.schedules import WEEKDAYS, Repeat, Schedule

SEARCH_YEARS = 60  # a recurrence with no firing in this many years never fires (e.g. 31 Feb)
CRON_DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
CRON_DAY_NUMBERS = (2, 3, 4, 5, 6, 7, 1)  # Scheduler's cron: 1 = Sunday ... 7 = Saturday


def local_to_utc(local: datetime, zone: ZoneInfo) -> datetime | None:
    """The UTC instant of a naive local time: None when daylight saving skips it, the first occurrence
    when it happens twice (EventBridge Scheduler's documented behaviour)."""
    aware = local.replace(tzinfo=zone, fold=0)
    instant = aware.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) != local:
        return None
    return instant


def day_in_month(year: int, month: int, repeat: Repeat, default_day: int) -> date | None:
    """The day a monthly or yearly recurrence names in a month, or None when the month has no such day."""
    length = month_calendar.monthrange(year, month)[1]
    if repeat.nth is not None and repeat.weekday is not None:
        wanted = WEEKDAYS.index(repeat.weekday)
        if repeat.nth == "last":
            last = date(year, month, length)
            return last - timedelta(days=(last.weekday() - wanted) % 7)
        first = date(year, month, 1)
        day = first + timedelta(days=(wanted - first.weekday()) % 7 + 7 * (repeat.nth - 1))
        return day if day.month == month else None
    if repeat.day == "last":
        return date(year, month, length)
    number = repeat.day if isinstance(repeat.day, int) else default_day
    return date(year, month, number) if number <= length else None


def candidate_days(schedule: Schedule) -> Iterator[date]:
    """Every local day the recurrence names, from the start's period on, in order (some before the start
    time; the caller drops those), for at most SEARCH_YEARS."""
    start = schedule.start.date()
    repeat = schedule.repeat
    if repeat is None:
        yield start
        return
    horizon = date(min(start.year + SEARCH_YEARS, 9999), 1, 1)
    step = repeat.interval
    if repeat.every == "day":
        day = start
        while day < horizon:
            if not (repeat.skip_weekends and day.weekday() >= 5):
                yield day
            day += timedelta(days=step)
    elif repeat.every == "week":
        days = sorted(WEEKDAYS.index(d) for d in repeat.weekdays) or [start.weekday()]
        monday = start - timedelta(days=start.weekday())
        while monday < horizon:
            for offset in days:
                yield monday + timedelta(days=offset)
            monday += timedelta(weeks=step)
    elif repeat.every == "month":
        index = start.year * 12 + start.month - 1
        while index // 12 < horizon.year:
            found = day_in_month(index // 12, index % 12 + 1, repeat, start.day)
            if found is not None:
                yield found
            index += step
    else:
        month = repeat.month or start.month
        for year in range(start.year, horizon.year, step):
            found = day_in_month(year, month, repeat, start.day)
            if found is not None:
                yield found


def firings(schedule: Schedule) -> Iterator[datetime]:
    """Every firing of the schedule (UTC), in order, honouring its end."""
    zone = ZoneInfo(schedule.timezone)
    hour, minute = schedule.time_of_day
    start = schedule.start
    count = 0
    for day in candidate_days(schedule):
        local = datetime.combine(day, time(hour, minute))
        if local < start:
            continue
        if schedule.ends.on is not None and day > schedule.ends.on:
            return
        instant = local_to_utc(local, zone)
        if instant is None:
            continue
        yield instant
        count += 1
        if schedule.ends.after is not None and count >= schedule.ends.after:
            return


def next_firings(schedule: Schedule, n: int, after: datetime | None = None) -> list[datetime]:
    """The next n firings (UTC) strictly after `after` (default: all from the start)."""
    found: list[datetime] = []
    for instant in firings(schedule):
        if after is not None and instant <= after:
            continue
        found.append(instant)
        if len(found) >= n:
            break
    return found


def is_firing(schedule: Schedule, instant: datetime) -> bool:
    """Whether `instant` (to the minute) is one of the schedule's firings."""
    wanted = instant.astimezone(UTC).replace(second=0, microsecond=0)
    for found in firings(schedule):
        if found >= wanted:
            return found == wanted
    return False


def last_firing(schedule: Schedule) -> datetime | None:
    """The final firing of a schedule that ends (None for one that never does, or never fires)."""
    if schedule.repeat is not None and schedule.ends.after is None and schedule.ends.on is None:
        return None
    last = None
    for last in firings(schedule):  # noqa: B007 - the loop's last value is the answer
        pass
    return last


# ------------------------------------------------------------------------------------------- Scheduler
@dataclass(frozen=True)
class SchedulerExpression:
    """How an EventBridge Scheduler schedule expresses the recurrence: one cron() expression (with its
    time zone, start and end), or a one-time at() that billflow re-arms after each firing."""

    kind: str  # "cron" | "at"
    expression: str
    timezone: str
    start: datetime | None = None
    end: datetime | None = None
    why_at: str = ""


def cron_fields(schedule: Schedule) -> str | None:
    """The six fields of one Scheduler cron expression equal to the recurrence, or None when none is."""
    repeat = schedule.repeat
    if repeat is None:
        return None
    hour, minute = schedule.time_of_day
    start = schedule.start.date()
    if repeat.every in ("day", "week") and repeat.interval != 1:
        return None
    if repeat.every == "day":
        return f"{minute} {hour} ? * MON-FRI *" if repeat.skip_weekends else f"{minute} {hour} * * ? *"
    if repeat.every == "week":
        days = sorted(WEEKDAYS.index(d) for d in repeat.weekdays) or [start.weekday()]
        return f"{minute} {hour} ? * {','.join(CRON_DAYS[d] for d in days)} *"
    if repeat.every == "month":
        if 12 % repeat.interval:
            return None  # every 5 months drifts through the calendar year: no month list repeats yearly
        first = (start.month - 1) % repeat.interval + 1
        months = "*" if repeat.interval == 1 else f"{first}/{repeat.interval}"
    else:
        if repeat.interval != 1:
            return None
        months = str(repeat.month or start.month)
    if repeat.nth is not None and repeat.weekday is not None:
        number = CRON_DAY_NUMBERS[WEEKDAYS.index(repeat.weekday)]
        weekday = f"{number}L" if repeat.nth == "last" else f"{number}#{repeat.nth}"
        return f"{minute} {hour} ? {months} {weekday} *"
    day = "L" if repeat.day == "last" else str(repeat.day if isinstance(repeat.day, int) else start.day)
    return f"{minute} {hour} {day} {months} ? *"


def why_not_cron(schedule: Schedule) -> str:
    repeat = schedule.repeat
    if repeat is None:
        return "fires once"
    if repeat.every in ("day", "week"):
        return f"every {repeat.interval} {repeat.every}s counts from the start; cron counts within a month"
    if repeat.every == "month":
        return f"every {repeat.interval} months does not repeat the same months each year"
    return f"every {repeat.interval} years has no cron field"


def scheduler_expression(schedule: Schedule, now: datetime) -> SchedulerExpression | None:
    """The Scheduler expression for a schedule as of `now`; None when it has no firing left."""
    upcoming = next_firings(schedule, 1, after=now)
    if not upcoming:
        return None
    fields = cron_fields(schedule)
    zone = ZoneInfo(schedule.timezone)
    if fields is None:
        # One-time schedules are written in UTC: an instant DST repeats is then unambiguous.
        instant = upcoming[0]
        return SchedulerExpression("at", f"at({instant.strftime('%Y-%m-%dT%H:%M:%S')})", "UTC",
                                   why_at=why_not_cron(schedule))
    start = local_to_utc(schedule.start, zone) or schedule.start.replace(tzinfo=zone).astimezone(UTC)
    end = None
    if schedule.ends.after is not None:
        last = last_firing(schedule)
        end = last + timedelta(minutes=1) if last else None
    elif schedule.ends.on is not None:
        end = datetime.combine(schedule.ends.on + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
    return SchedulerExpression("cron", f"cron({fields})", schedule.timezone,
                               start=start if start > now else None, end=end)


def describe(schedule: Schedule) -> str:
    """'every 2 weeks on monday, friday at 09:00 Europe/London, 12 times'."""
    hour, minute = schedule.time_of_day
    repeat = schedule.repeat
    if repeat is None:
        text = f"once on {schedule.start.date().isoformat()}"
    else:
        unit = repeat.every if repeat.interval == 1 else f"{repeat.interval} {repeat.every}s"
        text = f"every {unit}"
        if repeat.skip_weekends:
            text += " (weekdays only)"
        if repeat.weekdays:
            text += f" on {', '.join(repeat.weekdays)}"
        if repeat.nth is not None:
            text += f" on the {'last' if repeat.nth == 'last' else _ordinal(repeat.nth)} {repeat.weekday}"
        elif repeat.day is not None:
            text += f" on day {repeat.day}"
        if repeat.month is not None:
            text += f" of {month_calendar.month_name[repeat.month]}"
    text += f" at {hour:02d}:{minute:02d} {schedule.timezone}"
    if schedule.ends.after is not None:
        text += f", {schedule.ends.after} times"
    elif schedule.ends.on is not None:
        text += f", until {schedule.ends.on.isoformat()}"
    return text


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")
