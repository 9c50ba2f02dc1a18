"""The Dispatch task's one-action step (logic/action_step.py) on moto's counters and log tables: a sent action
is committed once and logged and the next step planned; nothing sent gives the place back; a failure after
the commit hands the action to the state machine's old path without failing the task (whose retry would
count the send twice). The send itself is replaced: it is not what these tests are about."""

from __future__ import annotations

from typing import Any

import billflow.aws
import billflow.settings
import pytest
from billflow.logic import action_step
from billflow.logic.run import plan_next
from billflow.storage.day_counters import CounterStore, hold_name

from tests.conftest import COUNTERS
from tests.unit.test_actions_placeholders import run_state

LOG = "billflow-log-test"
EXECUTION = "won-deal-run-1"


@pytest.fixture
def tables(aws: None, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("EXECUTION_LOG_TABLE", LOG)
    billflow.settings.get_settings.cache_clear()
    ddb = billflow.aws.client("dynamodb")
    ddb.create_table(TableName=LOG, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                           {"AttributeName": "sk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                {"AttributeName": "sk", "KeyType": "RANGE"}])
    return ddb


def _reserved_run(ddb: Any) -> dict[str, Any]:
    """A one-action run after CountDaily: its step planned, its hold in the day's counter."""
    state = run_state({"type": "notification", "options": {"message": "won"}})
    run = state.model_dump(mode="json")
    run["step"] = plan_next(state)
    pk = run["step"]["counter"]["pk"]
    ddb.put_item(TableName=COUNTERS, Item={"pk": {"S": pk}, "count": {"N": "1"},
                                           hold_name(EXECUTION, 0): {"N": "9999999999"}})
    return run


def _sent(status: str) -> Any:
    def dispatch(state: Any, step: dict[str, Any], previous: Any, counted: Any) -> dict[str, Any]:
        outcome = {"index": 0, "action_type": "notification", "status": status, "external_id": "msg-1"}
        item = {"pk": {"S": "acme"}, "sk": {"S": "2026#action-0"}, "status": {"S": status}}
        return {"outcome": outcome, "results": [outcome], "log_item": item}
    return dispatch


def _log_statuses(ddb: Any) -> list[str]:
    return [i["status"]["S"] for i in ddb.scan(TableName=LOG)["Items"]]


def test_a_sent_action_is_committed_logged_and_the_run_planned_on(tables: Any, monkeypatch: Any) -> None:
    run = _reserved_run(tables)
    monkeypatch.setattr(action_step, "dispatch", _sent("sent"))
    after = action_step.run_action_step(run, EXECUTION)
    counter = CounterStore(COUNTERS).read(run["step"]["counter"]["pk"])
    assert (counter.count, counter.sent, counter.holds) == (1, 1, {})
    assert _log_statuses(tables) == ["sent"]
    assert after["step"]["done"] is True and after["results"][0]["status"] == "sent"
    assert "dispatched" not in after and "counted" not in after


def test_nothing_sent_gives_the_place_back(tables: Any, monkeypatch: Any) -> None:
    run = _reserved_run(tables)
    monkeypatch.setattr(action_step, "dispatch", _sent("skipped"))
    action_step.run_action_step(run, EXECUTION)
    counter = CounterStore(COUNTERS).read(run["step"]["counter"]["pk"])
    assert (counter.count, counter.sent, counter.holds) == (0, 0, {})


def test_a_failure_after_the_commit_is_finished_by_the_state_machine(tables: Any, monkeypatch: Any) -> None:
    run = _reserved_run(tables)
    run["step"]["write_back"] = {"field": "invoiceId"}
    monkeypatch.setattr(action_step, "dispatch", _sent("sent"))

    def write_back(*args: Any) -> dict[str, Any]:
        raise ConnectionError("the CRM is down")

    monkeypatch.setattr(action_step, "write_back", write_back)
    after = action_step.run_action_step(run, EXECUTION)
    assert after["dispatched"]["settled"] is True and after["step"] == run["step"]
    counter = CounterStore(COUNTERS).read(run["step"]["counter"]["pk"])
    assert (counter.count, counter.sent, counter.holds) == (1, 1, {})  # counted once, not failed
    assert _log_statuses(tables) == []  # LogAction writes it after WriteBack


def test_a_retry_after_keeps_the_hold_and_the_step(tables: Any, monkeypatch: Any) -> None:
    run = _reserved_run(tables)
    monkeypatch.setattr(action_step, "dispatch", lambda *a: {"retry_after": 3, "attempt": 1, "reason": "429"})
    after = action_step.run_action_step(run, EXECUTION)
    assert after["dispatched"]["retry_after"] == 3 and after["step"] == run["step"]
    assert CounterStore(COUNTERS).read(run["step"]["counter"]["pk"]).holds == {hold_name(EXECUTION, 0): 9999999999}
