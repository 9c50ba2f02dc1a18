"""Time-based actions: when they are due, how a run carries them (wait, resume, recheck, skip), what a
rule may say about them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from billflow.logic.filter import build_run_state
from billflow.logic.run import plan_next, resume
from billflow.logic.schedule import group_due, utc_text
from billflow.logic.validate import validate_rule
from billflow.models.events import CrmEvent
from billflow.models.rules import Rule, TimeBasedActions, parse_duration
from billflow.models.run import RunState
from billflow.rules.comparators import FieldChange
from billflow.rules.engine import evaluate_rule
from pydantic import ValidationError

PARIS = ZoneInfo("Europe/Paris")
AT = datetime(2026, 3, 20, 14, 30, tzinfo=UTC)  # the trigger: a Friday, 15:30 in Paris
WON = {"stage": FieldChange("stage", "PROPOSAL", "CUSTOMER", 4)}


def note(text: str) -> dict[str, Any]:
    return {"type": "notification", "options": {"message": text}}


def group(**fields: Any) -> TimeBasedActions:
    return TimeBasedActions.model_validate({"actions": [note("later")], **fields})


@pytest.mark.parametrize(("text", "expected"), [
    ("2d", timedelta(days=2)), ("3h", timedelta(hours=3)), ("45m", timedelta(minutes=45)),
    ("1d 12h", timedelta(days=1, hours=12)), ("0d", timedelta(0)), (" 2d3h30m ", timedelta(days=2, hours=3,
                                                                                       minutes=30)),
])
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "2", "2 days", "3h2d", "-2d", "1.5d"])
def test_not_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_what_a_time_based_group_may_say() -> None:
    assert group(after="2d").describe() == "2d after the trigger"
    assert group(before="3d", field="closeDate", at="09:00").describe() == "3d before closeDate at 09:00"
    assert group(field="closeDate", at="09:00").describe() == "on closeDate at 09:00"
    for bad, message in [({"before": "3d"}, "before needs a field"), ({}, "say when"),
                         ({"after": "1d", "before": "1d", "field": "x"}, "not both"),
                         ({"after": "366d"}, "at most 365 days"), ({"after": "1d", "at": "9am"}, "time of day")]:
        with pytest.raises(ValidationError, match=message):
            group(**bad)


def test_when_groups_are_due() -> None:
    record = {"closeDate": "2026-04-30T00:00:00.000Z", "signedOn": "2026-04-02"}
    assert group_due(group(after="2d"), record, AT, PARIS) == (AT + timedelta(days=2), "")
    assert group_due(group(after="90m"), record, AT, PARIS) == (AT + timedelta(minutes=90), "")
    # The next day at 09:00 in Paris: 08:00 UTC (winter time until the 29th of March).
    assert group_due(group(after="1d", at="09:00"), record, AT, PARIS)[0] == datetime(2026, 3, 21, 8, tzinfo=UTC)
    # 3 days before the close date at 09:00 in Paris, which is on summer time by then: 07:00 UTC.
    assert group_due(group(before="3d", field="closeDate", at="09:00"), record, AT, PARIS)[0] == datetime(
        2026, 4, 27, 7, tzinfo=UTC)
    # A date-only field counts from its local midnight.
    assert group_due(group(field="signedOn", after="1d"), record, AT, PARIS)[0] == datetime(
        2026, 4, 2, 22, tzinfo=UTC)
    assert group_due(group(field="missing", after="1d"), record, AT, PARIS) == (None, "missing is empty")
    assert group_due(group(field="closeDate", after="1d"), {"closeDate": "soon"}, AT, PARIS) == (
        None, "closeDate is not a date ('soon')")


def test_a_time_of_day_that_daylight_saving_skips_moves_forward() -> None:
    # 29 March 2026: Paris goes from 02:00 to 03:00. "02:30" that day is 01:30 UTC (03:30 local).
    due, _ = group_due(group(field="d", at="02:30"), {"d": "2026-03-29"}, AT, PARIS)
    assert due == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


RULE = {
    "id": "won-follow-up", "source": "twenty", "object": "opportunity", "timezone": "Europe/Paris",
    "trigger": {"on": "edited"},
    "criteria": [{"field": "stage", "comparator": "changed_to", "value": "CUSTOMER"},
                 {"field": "amount", "comparator": ">", "value": 100}],
    "actions": [note("now")],
    "time_based": [
        {"before": "3d", "field": "closeDate", "at": "09:00", "actions": [note("before close")]},
        {"after": "2d", "recheck_criteria": True, "actions": [note("two days"), note("two days, again")]},
        {"after": "1d", "field": "paidOn", "actions": [note("after payment")]},
    ],
}
RECORD = {"stage": "CUSTOMER", "amount": 500, "closeDate": "2026-04-30T00:00:00.000Z", "paidOn": None}


def run_for(record: dict[str, Any], rule: dict[str, Any] = RULE) -> RunState:
    r = Rule.model_validate(rule)
    event = CrmEvent(event_id="e1", tenant="acme", source="twenty", object="opportunity", action="updated",
                     record_id="r1", record=record, changed_fields=["stage"], occurred_at=AT, received_at=AT)
    verdict = evaluate_rule(r, event, WON)
    assert verdict.matched
    return build_run_state(event, verdict, {})


def test_a_run_places_its_groups_in_time_in_the_order_they_come() -> None:
    state = run_for(RECORD)
    assert [(g.label, g.due, g.skip) for g in state.timed] == [
        ("1d after paidOn", utc_text(AT), "paidOn is empty"),  # will be skipped: first, at once
        ("2d after the trigger", "2026-03-22T14:30:00Z", ""),
        ("3d before closeDate at 09:00", "2026-04-27T07:00:00Z", ""),
    ]
    assert state.trigger_at == "2026-03-20T14:30:00Z"
    assert [a.options["message"] for a in state.sequence()] == [
        "now", "after payment", "two days", "two days, again", "before close"]


def test_times_already_past_or_beyond_a_year_are_skipped() -> None:
    def close_group(record: dict[str, Any]) -> str:
        [found] = [g for g in run_for(record).timed if g.field == "closeDate"]
        return found.skip

    assert close_group({**RECORD, "closeDate": "2026-03-21T00:00:00.000Z"}) == (
        "2026-03-18T08:00:00Z had already passed when the rule fired")
    assert "more than 365 days away" in close_group({**RECORD, "closeDate": "2027-06-30"})


def step_through(state: RunState, results: int) -> RunState:
    """As the state machine's Advance: one more action done."""
    done = [*state.results, *({"index": len(state.results) + i, "status": "notified", "external_id": f"m{i}"}
                              for i in range(results))]
    return state.model_copy(update={"results": done})


def test_the_run_acts_now_then_waits_then_resumes() -> None:
    state = run_for({**RECORD, "paidOn": "2026-03-20"})
    first = plan_next(state)
    assert first["action"]["options"]["message"] == "now"
    state = step_through(state, 1)
    wait = plan_next(state)
    # paidOn is a date: its local midnight in Paris (23:00 UTC the day before), plus a day.
    assert wait["wait_until"] == "2026-03-20T23:00:00Z" and wait["group"] == 0 and wait["refresh"] is True
    assert wait["log_item"]["status"] == {"S": "scheduled"}
    assert wait["log_item"]["reason"] == {"S": "1d after paidOn: waiting until 2026-03-20T23:00:00Z"}
    # The state machine fetched the record again (Refresh): the date is still there.
    refreshed = state.model_copy(update={"lookup": {"record": {**RECORD, "paidOn": "2026-03-20"}}})
    resumed = RunState.model_validate(resume(refreshed))
    assert resumed.waited == 1 and resumed.refresh_record is False
    assert plan_next(resumed)["action"]["options"]["message"] == "after payment"
    state = step_through(resumed, 1)
    assert plan_next(state)["wait_until"] == "2026-03-22T14:30:00Z"


def test_a_group_that_will_not_run_is_resumed_at_once_and_skipped() -> None:
    state = step_through(run_for(RECORD), 1)
    assert plan_next(state) == {"done": False, "resume": True, "group": 0}
    answer = resume(state)
    assert answer["resumed"]["skipped"] is True
    assert answer["resumed"]["log_item"]["reason"] == {"S": "1d after paidOn: paidOn is empty"}
    after = RunState.model_validate(answer)
    assert after.waited == 1
    assert [r["status"] for r in after.results] == ["notified", "skipped"]
    assert plan_next(after)["wait_until"] == "2026-03-22T14:30:00Z"


def at_group(state: RunState, position: int) -> RunState:
    """The run just before group `position` acts: every earlier action done, every earlier wait over."""
    before = len(state.actions) + sum(len(g.actions) for g in state.timed[:position])
    return step_through(state, before).model_copy(update={"waited": position})


def test_a_recheck_passes_when_the_record_still_fits() -> None:
    state = at_group(run_for(RECORD), 1)
    fresh = {**RECORD, "amount": 900, "name": "renamed"}
    answer = resume(state.model_copy(update={"lookup": {"record": fresh, "company": None}}))
    assert answer["resumed"] == {"skipped": False}
    after = RunState.model_validate(answer)
    assert after.record()["name"] == "renamed"  # later actions read the record as it is now
    assert plan_next(after)["action"]["options"]["message"] == "two days"


@pytest.mark.parametrize(("fresh", "why"), [
    ({**RECORD, "stage": "NEW"}, "stage is now 'NEW', was 'CUSTOMER'"),
    ({**RECORD, "amount": 50}, "amount is 50: > 100 does not hold"),
    ({key: value for key, value in RECORD.items() if key != "stage"}, "stage is now missing"),
])
def test_a_recheck_skips_the_group_when_the_record_no_longer_fits(fresh: dict[str, Any], why: str) -> None:
    state = at_group(run_for(RECORD), 1)
    answer = resume(state.model_copy(update={"lookup": {"record": fresh}}))
    assert answer["resumed"]["skipped"] is True
    assert why in answer["resumed"]["log_item"]["reason"]["S"]
    after = RunState.model_validate(answer)
    assert [r["status"] for r in after.results[-2:]] == ["skipped", "skipped"]  # both of its actions
    assert plan_next(after)["wait_until"] == "2026-04-27T07:00:00Z"  # the next group still comes


def test_a_deleted_record_skips_the_group() -> None:
    state = at_group(run_for(RECORD), 1)
    answer = resume(state.model_copy(update={"lookup": {"record": None}}))
    assert "the record no longer exists in the CRM" in answer["resumed"]["log_item"]["reason"]["S"]


def test_a_date_moved_later_means_waiting_again() -> None:
    state = at_group(run_for(RECORD), 2)
    moved = {**RECORD, "closeDate": "2026-05-15T00:00:00.000Z"}
    answer = resume(state.model_copy(update={"lookup": {"record": moved}}))
    assert answer["resumed"]["rescheduled"] is True
    assert answer["resumed"]["log_item"]["status"] == {"S": "rescheduled"}
    again = RunState.model_validate(answer)
    assert again.waited == 2
    assert plan_next(again)["wait_until"] == "2026-05-12T07:00:00Z"
    # Moved earlier (or not at all): it is due now, so it runs.
    earlier = {**RECORD, "closeDate": "2026-04-29T00:00:00.000Z"}
    assert resume(state.model_copy(update={"lookup": {"record": earlier}}))["resumed"] == {"skipped": False}


def test_the_run_is_done_after_its_last_group() -> None:
    state = at_group(run_for(RECORD), 3)
    step = plan_next(state)
    assert step["done"] is True
    assert step["log_item"]["reason"] == {"S": "5 action(s) done"}


def test_a_block_may_have_only_time_based_actions_and_validation_says_what_is_wrong() -> None:
    only_later = {**RULE, "actions": []}
    assert validate_rule(only_later)[1] == []
    _, problems = validate_rule({**RULE, "time_based": [{"after": "1d", "actions": []}]})
    assert [p.field for p in problems] == ["blocks.0.time_based.0.actions"]
    _, problems = validate_rule({**RULE, "criteria": [], "time_based": [
        {"after": "1d", "recheck_criteria": True, "actions": [note("x")]}]})
    assert [p.field for p in problems] == ["blocks.0.time_based.0.recheck_criteria"]
    _, problems = validate_rule({**RULE, "time_based": [{"after": "1d", "field": "company.createdAt",
                                                         "actions": [note("x")]}]})
    assert [p.field for p in problems] == ["blocks.0.time_based.0.field"]
    _, problems = validate_rule({**RULE, "time_based": [{"before": "2d", "actions": [note("x")]}]})
    assert [p.field for p in problems] == ["blocks.0.time_based.0"]
    assert "before needs a field" in problems[0].message


def test_time_based_actions_count_towards_the_per_rule_limits_and_placeholders() -> None:
    hook = {"type": "webhook", "connection": "hook"}
    _, problems = validate_rule({**RULE, "actions": [hook], "time_based": [{"after": "1d", "actions": [hook]}]})
    assert any("at most 1 webhook" in p.message and p.field == "blocks.0.time_based.0.actions.0"
               for p in problems)
    _, problems = validate_rule({**RULE, "time_based": [{"after": "1d", "actions": [note("{{ nowhere.x }}")]}]})
    assert [p.field for p in problems] == ["blocks.0.time_based.0.actions.0"]


# ------------------------------------------------------------------------------- a CRM's call budget spent
class SpentBudget:
    """A CRM connector whose call budget is spent (as storage/rate_limits.py raises it), or that fails otherwise."""

    kind = "twenty"

    def __init__(self, retry_after: float | None) -> None:
        self.retry_after = retry_after

    def lookup(self, *args: Any) -> dict[str, Any]:
        from billflow.errors import TransientError

        raise TransientError("Twenty: the 100 calls a minute allowed for key-x are used up; next window in 31 s",
                             retry_after_seconds=self.retry_after)

    get_record = lookup


def lookup_with(monkeypatch: pytest.MonkeyPatch, state: RunState, crm: SpentBudget) -> dict[str, Any]:
    from billflow.logic import run
    from billflow.storage.secrets import Connection

    monkeypatch.setattr(run, "crm_connection", lambda _: Connection(name="twenty", type="twenty", settings={}))
    monkeypatch.setattr("billflow.connectors.get_crm", lambda _: crm)
    return run.lookup(state)


def test_a_spent_crm_budget_makes_the_run_wait_for_it_then_look_up_again(monkeypatch: pytest.MonkeyPatch) -> None:
    state = run_for(RECORD)
    found = lookup_with(monkeypatch, state, SpentBudget(30.2))
    assert found == {"retry_after": 31, "crm_waits": 1}
    waiting = state.model_copy(update={"lookup": found, "recheck": True})
    assert plan_next(waiting) == {"done": False, "lookup_after": 31}  # before anything needing the lookup
    again = lookup_with(monkeypatch, waiting, SpentBudget(0.2))
    assert again == {"retry_after": 1, "crm_waits": 2}  # counted, and never a wait of nothing


def test_a_refresh_that_finds_the_budget_spent_waits_and_refreshes_again() -> None:
    state = at_group(run_for(RECORD), 1)
    answer = resume(state.model_copy(update={"lookup": {"retry_after": 12, "crm_waits": 1}}))
    assert answer["resumed"] == {"lookup_after": 12}
    assert RunState.model_validate(answer).waited == 1  # the group has not run: it is still the one waited for


def test_other_failures_and_a_budget_spent_too_long_still_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    from billflow.errors import TransientError
    from billflow.logic.run import MAX_CRM_WAITS

    state = run_for(RECORD)
    with pytest.raises(TransientError):  # no time to wait for: the state machine's retries take it
        lookup_with(monkeypatch, state, SpentBudget(None))
    spent = state.model_copy(update={"lookup": {"retry_after": 60, "crm_waits": MAX_CRM_WAITS}})
    with pytest.raises(TransientError, match="used up"):
        lookup_with(monkeypatch, spent, SpentBudget(30))
