"""The cron() expressions billflow gives EventBridge Scheduler say the same firings as the calendar: the
local runtime's Scheduler cron evaluator (an independent reading of Scheduler's cron syntax, with its
StartDate, EndDate and daylight-saving rules) against rules/calendar.py, over two years."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from billflow.models.schedules import Schedule
from billflow.rules.calendar import firings, scheduler_expression
from hypothesis import given, settings

from billflow_local.scheduler import Cron, ExpressionError, expression_firings
from tests.unit.test_calendar import schedules


@settings(max_examples=80, deadline=None)
@given(schedules())
def test_cron_expressions_fire_when_the_calendar_says(schedule: Schedule) -> None:
    zone = ZoneInfo(schedule.timezone)
    start = schedule.start.replace(tzinfo=zone).astimezone(UTC)
    now = start - timedelta(days=1)
    expression = scheduler_expression(schedule, now)
    if expression is None or expression.kind != "cron":
        return
    until = datetime.combine(schedule.start.date(), time(0), tzinfo=UTC) + timedelta(days=2 * 366)
    aws = {"ScheduleExpression": expression.expression, "ScheduleExpressionTimezone": expression.timezone,
           "StartDate": expression.start, "EndDate": expression.end}
    expected = [f for f in firings(schedule) if f <= until]
    assert expression_firings(aws, now, until, now) == expected


def test_scheduler_cron_syntax() -> None:
    zone = ZoneInfo("UTC")
    after, until = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)
    last_friday = [f.date().isoformat() for f in Cron.parse("0 9 ? * 6L *").firings(after, until, zone)]
    assert last_friday == ["2026-01-30", "2026-02-27"]
    second_saturday = [f.day for f in Cron.parse("0 9 ? JAN-FEB SAT#2 *").firings(after, until, zone)]
    assert second_saturday == [10, 14]
    every_quarter_hour = list(Cron.parse("0/15 * * * ? *").firings(after, after + timedelta(hours=1), zone))
    assert len(every_quarter_hour) == 4
    with pytest.raises(ExpressionError):
        Cron.parse("0 9 * * MON *")  # one of the day fields must be ?
    assert expression_firings({"ScheduleExpression": "rate(2 hours)"}, after, after + timedelta(hours=5),
                              after) == [after + timedelta(hours=2), after + timedelta(hours=4)]
    assert expression_firings({"ScheduleExpression": "at(2026-01-01T03:00:00)", "ScheduleExpressionTimezone":
                               "America/New_York"}, after, until, after) == [datetime(2026, 1, 1, 8, tzinfo=UTC)]
