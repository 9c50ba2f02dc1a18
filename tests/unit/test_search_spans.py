"""How a date rule's CRM search is narrowed when a span holds more records than one search reads: halved on
day boundaries down to one day, and only when the CRM kept to the dates it was asked for."""

from __future__ import annotations

from datetime import UTC, datetime

from billflow.logic.schedule import kept_to, split_days

DAY = datetime(2026, 12, 1, tzinfo=UTC)


def _day(number: int) -> datetime:
    return DAY.replace(day=number)


def test_a_span_is_halved_on_a_day_boundary_down_to_one_day() -> None:
    assert split_days(_day(1), _day(6)) == ((_day(1), _day(3)), (_day(3), _day(6)))
    assert split_days(_day(1), _day(3)) == ((_day(1), _day(2)), (_day(2), _day(3)))
    assert split_days(_day(1), _day(2)) is None


def test_records_outside_the_dates_asked_mean_the_crm_does_not_filter_on_them() -> None:
    inside = [{"closeDate": "2026-12-01T00:00:00.000Z"}, {"closeDate": "2026-12-05"},
              {"deal": {"closeDate": "2026-12-03T18:30:00Z"}}]
    assert kept_to(inside[:2], "closeDate", _day(1), _day(6))
    assert kept_to(inside[2:], "deal.closeDate", _day(1), _day(6))
    assert not kept_to([*inside[:2], {"closeDate": "2026-12-06"}], "closeDate", _day(1), _day(6))
    assert not kept_to([{"closeDate": None}], "closeDate", _day(1), _day(6))  # no date: not filtered on it
