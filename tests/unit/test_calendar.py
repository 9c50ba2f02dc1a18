"""The schedule calendar against an independent computation (dateutil.rrule + dateutil.tz), over two years
and several time zones, across DST changes and month ends; and the documented edge cases by example."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from billflow.models.schedules import WEEKDAYS, Schedule
from billflow.rules.calendar import cron_fields, firings, is_firing, last_firing, next_firings, scheduler_expression
from dateutil import rrule
from dateutil import tz as dateutil_tz
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

ZONES = ["America/New_York", "Europe/London", "Australia/Sydney", "Asia/Kolkata", "Pacific/Auckland",
         "America/Sao_Paulo", "UTC"]
RR_DAYS = (rrule.MO, rrule.TU, rrule.WE, rrule.TH, rrule.FR, rrule.SA, rrule.SU)
# Times near the DST changes of the zones above (01:30 and 02:30 fall in gaps or overlaps) and ordinary ones.
TIMES = ["00:00", "01:30", "02:00", "02:30", "03:00", "09:00", "23:59"]
HORIZON = timedelta(days=2 * 366)


def reference(schedule: Schedule, until: datetime) -> list[datetime]:
    """The firings by dateutil: rrule gives the local times, dateutil.tz says which exist and which repeat."""
    zone = ZoneInfo(schedule.timezone)
    hour, minute = schedule.time_of_day
    start = schedule.start
    repeat = schedule.repeat
    local_until = until.astimezone(zone).replace(tzinfo=None) + timedelta(days=2)
    if schedule.ends.on is not None:
        local_until = min(local_until, datetime.combine(schedule.ends.on, time(23, 59)))
    if repeat is None:
        local = [datetime.combine(start.date(), time(hour, minute))]
        local = [t for t in local if start <= t <= local_until]
    else:
        kwargs: dict[str, Any] = {"dtstart": start, "until": local_until, "interval": repeat.interval,
                                  "byhour": hour, "byminute": minute, "bysecond": 0, "wkst": rrule.MO}
        day_spec: dict[str, Any] = {}
        if repeat.nth is not None and repeat.weekday is not None:
            n = -1 if repeat.nth == "last" else repeat.nth
            day_spec = {"byweekday": RR_DAYS[WEEKDAYS.index(repeat.weekday)](n)}
        else:
            day = repeat.day if repeat.day is not None else start.day
            day_spec = {"bymonthday": -1 if day == "last" else day}
        if repeat.every == "day":
            freq = rrule.DAILY
            if repeat.skip_weekends:
                kwargs["byweekday"] = RR_DAYS[:5]
        elif repeat.every == "week":
            freq = rrule.WEEKLY
            kwargs["byweekday"] = [RR_DAYS[WEEKDAYS.index(d)] for d in repeat.weekdays] or [
                RR_DAYS[start.weekday()]]
        elif repeat.every == "month":
            freq = rrule.MONTHLY
            kwargs.update(day_spec)
        else:
            freq = rrule.YEARLY
            kwargs.update(day_spec, bymonth=repeat.month or start.month)
        local = list(rrule.rrule(freq, **kwargs))
    found: list[datetime] = []
    for naive in local:
        aware = naive.replace(tzinfo=zone)
        if not dateutil_tz.datetime_exists(aware):
            continue  # spring forward: the time does not exist that day; Scheduler skips it
        if dateutil_tz.datetime_ambiguous(aware):
            aware = dateutil_tz.enfold(aware, fold=0)  # fall back: once, at the first occurrence
        found.append(aware.astimezone(UTC))
    if schedule.ends.after is not None:
        found = found[: schedule.ends.after]
    return [f for f in found if f <= until]


def ours(schedule: Schedule, until: datetime) -> list[datetime]:
    found = []
    for instant in firings(schedule):
        if instant > until:
            break
        found.append(instant)
    return found


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    every = draw(st.sampled_from(["day", "week", "month", "year", None]))
    start_day = draw(st.dates(min_value=date(2025, 1, 1), max_value=date(2027, 12, 31)))
    start_time = draw(st.sampled_from([*TIMES, "12:00", "20:15"]))
    at = draw(st.sampled_from([*TIMES, None]))
    repeat: dict[str, Any] | None = None
    if every is not None:
        repeat = {"every": every, "interval": draw(st.sampled_from([1, 1, 2, 3, 4, 5, 6, 12]))}
        if every == "day":
            repeat["skip_weekends"] = draw(st.booleans())
        elif every == "week":
            repeat["weekdays"] = draw(st.lists(st.sampled_from(WEEKDAYS), unique=True, max_size=4))
        else:
            if draw(st.booleans()):
                repeat["nth"] = draw(st.sampled_from([1, 2, 3, 4, 5, "last"]))
                repeat["weekday"] = draw(st.sampled_from(WEEKDAYS))
            else:
                repeat["day"] = draw(st.sampled_from([1, 15, 28, 29, 30, 31, "last", None]))
            if every == "year":
                repeat["month"] = draw(st.sampled_from([None, 2, 3, 4, 10, 11, 12]))
                repeat["interval"] = draw(st.sampled_from([1, 1, 2, 4]))
    ends = draw(st.sampled_from(["never", "after", "on"]))
    ends_doc: dict[str, Any] = {}
    if ends == "after":
        ends_doc = {"after": draw(st.integers(min_value=1, max_value=40))}
    elif ends == "on":
        ends_doc = {"on": start_day + timedelta(days=draw(st.integers(min_value=0, max_value=500)))}
    return Schedule.model_validate({
        "id": "s", "rule": "r", "timezone": draw(st.sampled_from(ZONES)),
        "starts": f"{start_day.isoformat()}T{start_time}", "at": at, "repeat": repeat, "ends": ends_doc,
    })


@settings(max_examples=200, deadline=None)
@given(schedules())
def test_firings_over_two_years_match_dateutil(schedule: Schedule) -> None:
    until = datetime.combine(schedule.start.date(), time(0), tzinfo=UTC) + HORIZON
    assert ours(schedule, until) == reference(schedule, until)


@settings(max_examples=80, deadline=None)
@given(schedules(), st.integers(min_value=0, max_value=700))
def test_next_firings_after_any_instant(schedule: Schedule, days: int) -> None:
    after = datetime.combine(schedule.start.date(), time(12), tzinfo=UTC) + timedelta(days=days, minutes=7)
    horizon = after + timedelta(days=3 * 366)
    expected = [f for f in reference(schedule, horizon) if f > after][:5]
    assert [f for f in next_firings(schedule, 5, after=after) if f <= horizon] == expected
    for instant in expected:
        assert is_firing(schedule, instant)


# ------------------------------------------------------------------------------------------- by example
def make(**fields: Any) -> Schedule:
    return Schedule.model_validate({"id": "s", "rule": "r", **fields})


def local(instants: list[datetime], zone: str) -> list[str]:
    return [i.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M") for i in instants]


def test_the_31st_skips_shorter_months_and_last_is_every_month_end() -> None:
    on_31 = make(starts="2026-01-31T09:00", repeat={"every": "month", "day": 31})
    assert local(next_firings(on_31, 4), "UTC") == ["2026-01-31 09:00", "2026-03-31 09:00", "2026-05-31 09:00",
                                                    "2026-07-31 09:00"]
    last = make(starts="2026-01-31T09:00", repeat={"every": "month", "day": "last"})
    assert local(next_firings(last, 4), "UTC") == ["2026-01-31 09:00", "2026-02-28 09:00", "2026-03-31 09:00",
                                                   "2026-04-30 09:00"]


def test_every_four_months_and_29_february() -> None:
    seed = make(starts="2026-01-31T09:00", timezone="Asia/Kolkata", repeat={"every": "month", "interval": 4,
                                                                             "day": "last"})
    assert local(next_firings(seed, 4), "Asia/Kolkata") == ["2026-01-31 09:00", "2026-05-31 09:00",
                                                            "2026-09-30 09:00", "2027-01-31 09:00"]
    leap = make(starts="2028-02-29T08:00", repeat={"every": "year"})
    assert local(next_firings(leap, 2), "UTC") == ["2028-02-29 08:00", "2032-02-29 08:00"]


def test_fifth_weekday_fires_only_in_months_that_have_one() -> None:
    fifth = make(starts="2026-01-01T10:00", repeat={"every": "month", "nth": 5, "weekday": "friday"})
    assert local(next_firings(fifth, 3), "UTC") == ["2026-01-30 10:00", "2026-05-29 10:00", "2026-07-31 10:00"]
    second_saturday = make(starts="2026-01-01T10:00", repeat={"every": "month", "nth": 2, "weekday": "saturday"})
    assert local(next_firings(second_saturday, 2), "UTC") == ["2026-01-10 10:00", "2026-02-14 10:00"]


def test_dst_gap_skips_and_overlap_fires_once_at_the_first_occurrence() -> None:
    gap = make(starts="2026-03-07T02:30", timezone="America/New_York", repeat={"every": "day"})
    assert local(next_firings(gap, 3), "America/New_York") == ["2026-03-07 02:30", "2026-03-09 02:30",
                                                               "2026-03-10 02:30"]
    overlap = make(starts="2026-10-31T01:30", timezone="America/New_York", repeat={"every": "day"})
    fall_back = next_firings(overlap, 3)[1]
    assert fall_back == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT, not 01:30 EST (06:30Z)


def test_start_later_than_the_firing_time_fires_next_day_and_end_date_is_inclusive() -> None:
    late = make(starts="2026-06-01T15:00", at="09:00", repeat={"every": "day"}, ends={"on": "2026-06-03"})
    assert local(list(firings(late)), "UTC") == ["2026-06-02 09:00", "2026-06-03 09:00"]
    counted = make(starts="2026-03-06T02:30", timezone="America/New_York", repeat={"every": "day"},
                   ends={"after": 3})
    # 8 March 02:30 does not exist in New York: it is no firing, so it does not count.
    assert local(list(firings(counted)), "America/New_York") == ["2026-03-06 02:30", "2026-03-07 02:30",
                                                                 "2026-03-09 02:30"]
    assert last_firing(counted) == datetime(2026, 3, 9, 6, 30, tzinfo=UTC)


def test_every_two_weeks_counts_from_the_start_week_monday_first() -> None:
    fortnightly = make(starts="2026-01-07T09:00", repeat={"every": "week", "interval": 2,
                                                          "weekdays": ["monday", "wednesday"]})
    # The start week's Monday (5 Jan) is before the start; the next is two weeks on.
    assert local(next_firings(fortnightly, 3), "UTC") == ["2026-01-07 09:00", "2026-01-19 09:00",
                                                          "2026-01-21 09:00"]


def test_cron_when_one_expression_says_it_else_at() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    monthly = make(starts="2026-01-31T09:00", timezone="Europe/London", repeat={"every": "month", "day": "last"})
    assert cron_fields(monthly) == "0 9 L * ? *"
    nth = make(starts="2026-01-01T10:30", repeat={"every": "month", "interval": 3, "nth": "last",
                                                  "weekday": "friday"})
    assert cron_fields(nth) == "30 10 ? 1/3 6L *"
    weekdays = make(starts="2026-01-01T08:00", repeat={"every": "day", "skip_weekends": True})
    assert cron_fields(weekdays) == "0 8 ? * MON-FRI *"
    expression = scheduler_expression(monthly, now)
    assert expression is not None and expression.kind == "cron" and expression.timezone == "Europe/London"
    fortnightly = make(starts="2026-01-07T09:00", repeat={"every": "week", "interval": 2})
    at = scheduler_expression(fortnightly, now)
    assert at is not None and at.kind == "at" and at.expression == "at(2026-01-07T09:00:00)"
    assert "counts from the start" in at.why_at
    done = make(starts="2025-01-07T09:00", repeat={"every": "week"}, ends={"after": 2})
    assert scheduler_expression(done, now) is None


@pytest.mark.parametrize(("repeat", "message"), [
    ({"every": "day", "weekdays": ["monday"]}, "weekdays is for every: week"),
    ({"every": "month", "nth": 2}, "nth and weekday go together"),
    ({"every": "month", "day": 32}, "day is 1..31"),
    ({"every": "week", "skip_weekends": True}, "skip_weekends is for every: day"),
])
def test_recurrences_that_do_not_fit_are_refused(repeat: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make(starts="2026-01-01T09:00", repeat=repeat)
