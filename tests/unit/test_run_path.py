"""A run's path from its Step Functions history (GetExecutionHistory's event types and details, as AWS
answers them): passed, retried, waiting, failed and running states (issue 13)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from billflow.logic.run_path import path_of

START = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


class History:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = [{"type": "ExecutionStarted", "timestamp": START, "id": 1}]

    def add(self, kind: str, **details: Any) -> History:
        event: dict[str, Any] = {"type": kind, "id": len(self.events) + 1,
                                 "timestamp": START + timedelta(seconds=len(self.events))}
        event.update(details)
        self.events.append(event)
        return self

    def enter(self, kind: str, name: str) -> History:
        return self.add(f"{kind}StateEntered", stateEnteredEventDetails={"name": name, "input": "{}"})

    def exit(self, kind: str, name: str) -> History:
        return self.add(f"{kind}StateExited", stateExitedEventDetails={"name": name, "output": "{}"})

    def task(self, name: str, outcomes: list[str]) -> History:
        self.enter("Task", name)
        for outcome in outcomes:
            self.add("TaskScheduled", taskScheduledEventDetails={"resourceType": "lambda", "resource": "invoke"})
            self.add("TaskStarted")
            self.add(f"Task{outcome}")
        return self


def by_name(states: list[Any]) -> dict[str, Any]:
    return {s.name: s for s in states}


def test_a_succeeded_run_with_a_retried_task() -> None:
    history = (History().enter("Pass", "Prepare").exit("Pass", "Prepare")
               .task("Lookup", ["Failed", "Succeeded"]).exit("Task", "Lookup")
               .task("Dispatch", ["Succeeded"]).exit("Task", "Dispatch")
               .enter("Succeed", "Done").add("ExecutionSucceeded"))
    states = path_of(history.events, "SUCCEEDED")
    assert [s.name for s in states] == ["Prepare", "Lookup", "Dispatch", "Done"]
    found = by_name(states)
    assert found["Prepare"].status == "passed"
    assert (found["Lookup"].status, found["Lookup"].retries) == ("retried", 1)
    assert found["Dispatch"].status == "passed"
    assert found["Done"].status == "passed"
    assert found["Lookup"].entered == "2026-12-05T09:00:03.000Z"
    assert found["Lookup"].exited is not None


def test_a_waiting_run_and_a_running_task() -> None:
    waiting = History().enter("Pass", "Prepare").exit("Pass", "Prepare").enter("Wait", "WaitUntilDue")
    assert [(s.name, s.status) for s in path_of(waiting.events, "RUNNING")] == [
        ("Prepare", "passed"), ("WaitUntilDue", "waiting")]
    running = History().task("Dispatch", ["Failed"])
    assert [(s.name, s.status) for s in path_of(running.events, "RUNNING")] == [("Dispatch", "running")]


def test_a_failed_run_and_a_caught_failure() -> None:
    history = (History().task("Dispatch", ["Failed", "Failed", "Failed"]).exit("Task", "Dispatch")  # caught
               .task("NotifyFailure", ["Succeeded"]).exit("Task", "NotifyFailure")
               .enter("Fail", "RunFailed").add("ExecutionFailed"))
    found = by_name(path_of(history.events, "FAILED"))
    assert (found["Dispatch"].status, found["Dispatch"].retries) == ("failed", 2)
    assert found["NotifyFailure"].status == "passed"
    assert found["RunFailed"].status == "failed"

    timed_out = History().task("Lookup", ["TimedOut"]).add("ExecutionTimedOut")
    assert [(s.name, s.status) for s in path_of(timed_out.events, "TIMED_OUT")] == [("Lookup", "failed")]


def test_states_visited_in_a_loop_are_folded_in_order_of_first_entry() -> None:
    history = History()
    for outcomes in (["Succeeded"], ["Failed", "Succeeded"], ["Succeeded"]):
        history.enter("Choice", "NextAction").exit("Choice", "NextAction")
        history.task("Dispatch", outcomes).exit("Task", "Dispatch")
    history.enter("Succeed", "Done")
    states = path_of(history.events, "SUCCEEDED")
    assert [s.name for s in states] == ["NextAction", "Dispatch", "Done"]
    dispatch = by_name(states)["Dispatch"]
    assert (dispatch.status, dispatch.retries) == ("retried", 1)
