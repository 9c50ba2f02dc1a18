"""A run's path through the state machine, from its Step Functions history: each state it entered, whether it
passed, waits, was retried, failed or is running, for the console to draw on the ASL graph."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from billflow.errors import NotFound
from billflow.models.admin import ExecutionPathAnswer, StateVisit, VisitStatus
from billflow.storage.executions import Executions

ATTEMPT_EVENTS = ("Scheduled",)  # TaskScheduled, LambdaFunctionScheduled, ActivityScheduled
FAILURE_SUFFIXES = ("Failed", "TimedOut", "StartFailed", "ScheduleFailed", "SubmitFailed")
END_FAILURES = ("ExecutionFailed", "ExecutionTimedOut", "ExecutionAborted")


@dataclass
class _Visit:
    name: str
    kind: str  # the event type's prefix: Task, Wait, Choice, Pass, Fail, Map...
    entered: str | None
    exited: str | None = None
    attempts: int = 0
    last_failed: bool = False


def execution_path(executions: Executions, tenant: str, name: str) -> ExecutionPathAnswer:
    described = executions.describe(name)
    history = executions.history(name) if described is not None else None
    if described is None or history is None or not _belongs_to(described, tenant):
        raise NotFound(f"tenant {tenant} has no run {name!r}")
    return ExecutionPathAnswer(status=str(described.get("status", "RUNNING")),
                               states=path_of(history, str(described.get("status", "RUNNING"))))


def _belongs_to(described: dict[str, Any], tenant: str) -> bool:
    """Runs carry their tenant in their input: a run of another tenant is 'not found', never shown."""
    import json  # deferred: only this check parses the input

    try:
        document = json.loads(described.get("input") or "{}")
    except ValueError:
        return False
    return isinstance(document, dict) and document.get("tenant") == tenant


def path_of(events: list[dict[str, Any]], execution_status: str) -> list[StateVisit]:
    """The states in the order they were first entered, each visit folded into one: failed if any visit
    failed, retried if any was retried, else what its last visit is (passed, waiting, running)."""
    visits: list[_Visit] = []
    open_visits: dict[str, _Visit] = {}
    current: _Visit | None = None
    for event in events:
        kind = str(event.get("type", ""))
        at = _time(event.get("timestamp"))
        if kind.endswith("StateEntered"):
            name = str(_details(event, "stateEnteredEventDetails").get("name", ""))
            current = _Visit(name=name, kind=kind.removesuffix("StateEntered"), entered=at)
            visits.append(current)
            open_visits[name] = current
        elif kind.endswith("StateExited"):
            name = str(_details(event, "stateExitedEventDetails").get("name", ""))
            visit = open_visits.pop(name, None)
            if visit is not None:
                visit.exited = at
        elif current is not None and kind.endswith(ATTEMPT_EVENTS):
            current.attempts += 1
            current.last_failed = False
        elif current is not None and kind.endswith(FAILURE_SUFFIXES) and not kind.startswith("Execution"):
            current.last_failed = True
    by_name: dict[str, StateVisit] = {}
    for visit in visits:
        status = _status(visit, execution_status)
        seen = by_name.get(visit.name)
        retries = max(visit.attempts - 1, 0)
        if seen is None:
            by_name[visit.name] = StateVisit(name=visit.name, status=status, entered=visit.entered,
                                             exited=visit.exited, retries=retries)
            continue
        seen.retries += retries
        seen.exited = visit.exited or seen.exited
        if "failed" in (seen.status, status):
            seen.status = "failed"
        elif "retried" in (seen.status, status):
            seen.status = "retried"
        else:
            seen.status = status
    return list(by_name.values())


def _status(visit: _Visit, execution_status: str) -> VisitStatus:
    running = execution_status == "RUNNING"
    if visit.kind == "Fail" or (visit.last_failed and (visit.exited or not running)):
        return "failed"
    if visit.exited is None:
        if running:
            return "waiting" if visit.kind == "Wait" else "running"
        if execution_status == "SUCCEEDED":
            return "passed"  # a Succeed state ends the run where it stands
        return "failed"  # the run ended (failed, timed out, aborted) inside this state
    return "retried" if visit.attempts > 1 else "passed"


def _details(event: dict[str, Any], key: str) -> dict[str, Any]:
    found = event.get(key)
    return found if isinstance(found, dict) else {}


def _time(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
    return str(value) if value else None
