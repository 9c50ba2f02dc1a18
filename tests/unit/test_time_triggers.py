"""Date triggers (when a record's date comes round), the scheduler's window, digest times, usage thresholds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from billflow.logic.limits import alert_at, digest_instant
from billflow.logic.run import decide, plan_next
from billflow.logic.schedule import date_run_state, index_record, occurrence_after, window
from billflow.logic.validate import validate_rule
from billflow.models.events import CrmEvent
from billflow.models.rules import DateTrigger, FailureDigest, Rule, TenantSettings
from billflow.models.run import RunState
from billflow.rules.engine import evaluate_rule
from billflow.storage.due_index import DueItem, due_hour
from pydantic import ValidationError

PARIS = ZoneInfo("Europe/Paris")
UTC_ZONE = ZoneInfo("UTC")


def trigger(**fields: Any) -> DateTrigger:
    return DateTrigger.model_validate({"type": "date", "field": "closeDate", **fields})


def test_once_the_fields_date_plus_the_offset_at_the_time_of_day() -> None:
    t = trigger(offset_days=30, at="09:00")
    close = "2026-03-31T00:00:00.000Z"  # 02:00 on the 31st in Paris
    due = datetime(2026, 4, 30, 7, tzinfo=UTC)  # 30 April, 09:00 in Paris (summer time)
    assert occurrence_after(t, close, PARIS, datetime(2026, 1, 1, tzinfo=UTC)) == due
    assert occurrence_after(t, close, PARIS, due - timedelta(seconds=1)) == due
    assert occurrence_after(t, close, PARIS, due) is None  # once: nothing after it
    assert occurrence_after(trigger(offset_days=-3), "2026-03-31", UTC_ZONE,
                            datetime(2026, 1, 1, tzinfo=UTC)) == datetime(2026, 3, 28, tzinfo=UTC)
    for empty in (None, "", "tbd", 5):
        assert occurrence_after(t, empty, PARIS, datetime(2026, 1, 1, tzinfo=UTC)) is None


def test_yearly_and_monthly_repeat_on_the_same_day() -> None:
    yearly = trigger(repeat="yearly", at="08:00")
    after = datetime(2030, 6, 1, tzinfo=UTC)
    assert occurrence_after(yearly, "2024-02-29", UTC_ZONE, after) == datetime(2031, 2, 28, 8, tzinfo=UTC)
    assert occurrence_after(yearly, "2024-07-15", UTC_ZONE, after) == datetime(2030, 7, 15, 8, tzinfo=UTC)
    monthly = trigger(repeat="monthly")
    assert occurrence_after(monthly, "2026-01-31", UTC_ZONE, datetime(2026, 4, 2, tzinfo=UTC)) == datetime(
        2026, 4, 30, tzinfo=UTC)  # the 31st falls on the 30th in April
    assert occurrence_after(monthly, "2026-01-31", UTC_ZONE, datetime(2026, 4, 30, tzinfo=UTC)) == datetime(
        2026, 5, 31, tzinfo=UTC)
    # A large offset: 200 days after each monthly date. After 1 June 2027, the first is 31 Oct 2026 + 200d.
    late = trigger(repeat="monthly", offset_days=200)
    first = occurrence_after(late, "2026-01-15", UTC_ZONE, datetime(2027, 6, 1, tzinfo=UTC))
    assert first is not None and first == datetime(2026, 11, 15, tzinfo=UTC) + timedelta(days=200)
    # Never before the field's own date.
    assert occurrence_after(yearly, "2031-01-01", UTC_ZONE, after) == datetime(2031, 1, 1, 8, tzinfo=UTC)


def test_what_a_date_trigger_may_say() -> None:
    r = Rule.model_validate({"id": "renew", "source": "twenty", "object": "opportunity",
                             "trigger": {"type": "date", "field": "closeDate", "offset_days": 30, "at": "09:00",
                                         "timezone": "Europe/Paris"},
                             "actions": [{"type": "notification", "options": {"message": "renew"}}]})
    assert r.is_date_triggered and r.trigger.when == "every_edit" and r.trigger.fields is None
    assert not r.watched_paths()
    for bad in ({"type": "date"}, {"type": "date", "field": "d", "at": "25:00"},
                {"type": "date", "field": "d", "timezone": "Nowhere/City"},
                {"type": "date", "field": "d", "offset_days": 400}, {"type": "date", "field": "d", "on": "edited"},
                {"type": "hourly"}):
        with pytest.raises(ValidationError):
            Rule.model_validate({"id": "x", "source": "twenty", "object": "opportunity", "trigger": bad})
    base = {"id": "x", "source": "twenty", "object": "opportunity", "trigger": {"type": "date", "field": "d"},
            "actions": [{"type": "notification", "options": {"message": "m"}}]}
    _, problems = validate_rule({**base, "criteria": [{"field": "stage", "comparator": "changed_to",
                                                       "value": "CUSTOMER"}]})
    assert [p.field for p in problems] == ["blocks.0.criteria.0.comparator"]
    _, problems = validate_rule({**base, "trigger": {"type": "date", "field": "company.createdAt"}})
    assert [p.field for p in problems] == ["trigger.field"]


RENEWAL = Rule.model_validate({
    "id": "renewal", "tenant": "acme", "source": "twenty", "object": "opportunity",
    "trigger": {"type": "date", "field": "closeDate", "offset_days": 30, "at": "09:00", "timezone": "Europe/Paris"},
    "criteria": [{"field": "stage", "comparator": "is", "value": "CUSTOMER"}],
    "actions": [{"type": "notification", "options": {"message": "renew {{ record.name }}"}}],
    "time_based": [{"after": "7d", "actions": [{"type": "notification", "options": {"message": "again"}}]}],
})
DUE = datetime(2026, 4, 30, 7, tzinfo=UTC)


def event(record: dict[str, Any], action: str = "updated") -> CrmEvent:
    at = datetime(2026, 3, 1, tzinfo=UTC)
    return CrmEvent(event_id="e1", tenant="acme", source="twenty", object="opportunity", action=action,  # type: ignore[arg-type]
                    record_id="r1", record=record, occurred_at=at, received_at=at)


def test_date_rules_never_match_events() -> None:
    verdict = evaluate_rule(RENEWAL, event({"stage": "CUSTOMER", "closeDate": "2026-03-31"}), {})
    assert not verdict.matched and "scheduler" in verdict.reason


class FakeIndex:
    def __init__(self) -> None:
        self.items: dict[str, datetime] = {}

    def put(self, event: CrmEvent, rule: Rule, due: datetime) -> None:
        self.items[rule.id] = due

    def remove(self, record_key: str, rule_id: str, only_if_due: datetime | None = None) -> None:
        self.items.pop(rule_id, None)


def test_every_event_indexes_the_next_due_instant_or_forgets_it() -> None:
    index = FakeIndex()
    now = datetime(2026, 3, 1, tzinfo=UTC)
    assert index_record(event({"closeDate": "2026-03-31T00:00:00.000Z"}), [RENEWAL], index, now) == 1  # type: ignore[arg-type]
    assert index.items == {"renewal": DUE}
    index_record(event({"closeDate": None}), [RENEWAL], index, now)  # type: ignore[arg-type]
    assert index.items == {}
    index_record(event({"closeDate": "2026-03-31"}), [RENEWAL], index, now)  # type: ignore[arg-type]
    index_record(event({"closeDate": "2026-03-31"}, "deleted"), [RENEWAL], index, now)  # type: ignore[arg-type]
    assert index.items == {}
    index_record(event({"closeDate": "2026-01-01"}), [RENEWAL], index, now)  # type: ignore[arg-type]
    assert index.items == {}  # already past: nothing to fire
    inactive = RENEWAL.model_copy(update={"active": False})
    assert index_record(event({"closeDate": "2026-03-31"}), [inactive], index, now) == 0  # type: ignore[arg-type]


def date_run(record: dict[str, Any]) -> RunState:
    item = DueItem(pk="p", tenant="acme", rule_id="renewal", source="twenty", object="opportunity",
                   record_id="r1", field="closeDate", value="2026-03-31T00:00:00.000Z", due=DUE,
                   record={"id": "r1", "closeDate": "2026-03-31T00:00:00.000Z"})
    state = date_run_state(item, RENEWAL, DUE, TenantSettings(), datetime(2026, 4, 30, 7, 5, tzinfo=UTC))
    assert state.recheck and state.refresh_record and state.trigger_at == "2026-04-30T07:00:00Z"
    assert state.transition == "date:closeDate@2026-04-30T07:00:00Z"
    assert plan_next(state) == {"done": False, "decide": True}
    return state.model_copy(update={"lookup": {"record": record, "company": {"name": "Acme"}}})


def test_a_date_run_decides_on_the_record_the_crm_holds_on_the_day() -> None:
    fresh = {"id": "r1", "name": "Fleet", "stage": "CUSTOMER", "closeDate": "2026-03-31T00:00:00.000Z"}
    answer = decide(date_run(fresh))
    assert answer["decision"]["matched"] is True
    decided = RunState.model_validate(answer)
    assert [g.due for g in decided.timed] == ["2026-05-07T07:00:00Z"]  # 7 days after the trigger instant
    step = plan_next(decided)
    assert step["request"]["message"] == "renew Fleet"
    lost = decide(date_run({**fresh, "stage": "NEW"}))
    assert lost["decision"]["matched"] is False
    moved = decide(date_run({**fresh, "closeDate": "2026-04-15T00:00:00.000Z"}))
    assert "closeDate is now '2026-04-15T00:00:00.000Z': it no longer falls due" in (
        moved["decision"]["log_item"]["reason"]["S"])
    gone = decide(date_run({}).model_copy(update={"lookup": {"record": None}}))
    assert gone["decision"]["log_item"]["reason"] == {"S": "the record no longer exists in the CRM"}


def test_the_scheduler_window_and_index_partitions() -> None:
    now = datetime(2026, 4, 30, 7, 15, tzinfo=UTC)
    assert window(now, None) == (now - timedelta(hours=1), now)
    assert window(now, datetime(2026, 4, 30, 7, 0, tzinfo=UTC))[0] == datetime(2026, 4, 30, 7, 0, tzinfo=UTC)
    assert window(now, datetime(2025, 1, 1, tzinfo=UTC))[0] == now - timedelta(days=31)  # bounded catch-up
    assert due_hour(DUE, "acme#twenty#opportunity#r1#due#renewal").startswith("2026-04-30T07#")


def test_digest_times() -> None:
    daily = FailureDigest(frequency="daily", at="08:00", timezone="Europe/Paris")
    assert digest_instant(daily, datetime(2026, 11, 21, 7, 30, tzinfo=UTC)) == datetime(2026, 11, 21, 7, tzinfo=UTC)
    assert digest_instant(daily, datetime(2026, 11, 21, 6, 59, tzinfo=UTC)) == datetime(2026, 11, 20, 7, tzinfo=UTC)
    weekly = FailureDigest(frequency="weekly", weekday="monday", at="08:00", timezone="UTC")
    # Saturday 21 November 2026: the last Monday 08:00 was the 16th.
    assert digest_instant(weekly, datetime(2026, 11, 21, 12, tzinfo=UTC)) == datetime(2026, 11, 16, 8, tzinfo=UTC)
    assert digest_instant(weekly, datetime(2026, 11, 23, 8, tzinfo=UTC)) == datetime(2026, 11, 23, 8, tzinfo=UTC)
    assert digest_instant(weekly, datetime(2026, 11, 23, 7, 59, tzinfo=UTC)) == datetime(2026, 11, 16, 8, tzinfo=UTC)


def test_usage_thresholds_and_settings() -> None:
    assert alert_at(500, 80) == 400
    assert alert_at(5, 80) == 4
    assert alert_at(3, 1) == 1
    settings = TenantSettings.model_validate({
        "daily_limits": {"email_alert": 100},
        "usage_alert": {"threshold_percent": 90, "recipients": ["ops@example.com"]},
        "failure_digest": {"frequency": "weekly", "weekday": "friday", "at": "17:30", "timezone": "Europe/Paris",
                           "recipients": ["ops@example.com"]},
    })
    assert settings.usage_alert is not None and settings.usage_alert.threshold_percent == 90
    with pytest.raises(ValidationError):
        TenantSettings.model_validate({"usage_alert": {"threshold_percent": 0}})
    with pytest.raises(ValidationError):
        TenantSettings.model_validate({"failure_digest": {"frequency": "hourly"}})


def test_a_rules_record_fields_are_its_criteria_its_date_and_its_waits_fields() -> None:
    rule = Rule.model_validate({
        "id": "renewal", "source": "hubspot", "object": "deal",
        "trigger": {"type": "date", "field": "renewal_date", "offset_days": -3},
        "blocks": [{"criteria": [{"field": "dealstage", "comparator": "is", "value": "closedwon"},
                                 {"field": "company.domain", "comparator": "is_not_empty"}],
                    "time_based": [{"before": "1d", "field": "contract_end", "actions": []}]}],
    })
    assert rule.record_fields() == {"renewal_date", "dealstage", "contract_end"}  # company.* is looked up
