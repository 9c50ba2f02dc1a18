"""Progress lines: an execution's history events, and a bus delivery's result, as short lines for people."""

from __future__ import annotations

import json
import re
from typing import Any


class ExecutionProgress:
    """Turns one execution's history events into short lines: `Dispatch ✗ TransientError (retrying)`."""

    _FAILURES = {"LambdaFunctionFailed": "lambdaFunctionFailedEventDetails",
                 "LambdaFunctionTimedOut": "lambdaFunctionTimedOutEventDetails",
                 "LambdaFunctionStartFailed": "lambdaFunctionStartFailedEventDetails",
                 "LambdaFunctionScheduleFailed": "lambdaFunctionScheduleFailedEventDetails",
                 "TaskFailed": "taskFailedEventDetails", "TaskTimedOut": "taskTimedOutEventDetails",
                 "TaskSubmitFailed": "taskSubmitFailedEventDetails"}

    def __init__(self, name: str, definition: dict[str, Any]) -> None:
        self.name = name
        self.states = _all_states(definition)
        self.last_event_id = 0
        self.finished = False
        self.state = ""
        self.failed_in_state = False
        self.attempts: dict[int, int] = {}  # retrier index -> failures matched, in the current state

    def render(self, event: dict[str, Any]) -> str | None:
        kind = event["type"]
        if kind == "ExecutionStarted":
            return "▶ started"
        if kind.endswith("StateEntered"):
            self.state = event["stateEnteredEventDetails"]["name"]
            self.failed_in_state = False
            self.attempts = {}
            if kind == "WaitStateEntered":
                return f"{self.state} ⏳ {self._wait_for(event['stateEnteredEventDetails'].get('input'))}"
            return None
        if kind.endswith("StateExited"):
            if kind in ("TaskStateExited", "WaitStateExited") and not self.failed_in_state:
                return f"{event['stateExitedEventDetails']['name']} ✓"
            return None
        if kind in self._FAILURES:
            details = event.get(self._FAILURES[kind]) or {}
            error = details.get("error") or ("States.Timeout" if "TimedOut" in kind else "States.TaskFailed")
            self.failed_in_state = True
            return f"{self.state} ✗ {error}{self._outcome(error)}"
        if kind == "ExecutionSucceeded":
            self.finished = True
            return "→ SUCCEEDED"
        if kind in ("ExecutionFailed", "ExecutionAborted", "ExecutionTimedOut"):
            self.finished = True
            details = event.get("executionFailedEventDetails") or {}
            status = {"ExecutionFailed": "FAILED", "ExecutionAborted": "ABORTED"}.get(kind, "TIMED_OUT")
            return f"→ {status} {details.get('error') or ''}".rstrip()
        return None

    def _wait_for(self, state_input: str | None) -> str:
        """How long a Wait state waits: its Seconds, or its SecondsPath read from the state's input."""
        state = self.states.get(self.state) or {}
        for key in ("Seconds", "Timestamp"):
            if key in state:
                return f"{state[key]}s" if key == "Seconds" else f"until {state[key]}"
        path = state.get("SecondsPath") or state.get("TimestampPath")
        value: Any = json.loads(state_input or "null")
        for part in str(path or "").removeprefix("$").strip(".").split("."):
            value = value.get(part) if isinstance(value, dict) and part else value
        if value is None or path is None:
            return "waiting"
        return f"{value}s" if "SecondsPath" in state else f"until {value}"

    def _outcome(self, error: str) -> str:
        """What the state machine does next with this error, from the state's own Retry and Catch."""
        state = self.states.get(self.state) or {}
        for index, retrier in enumerate(state.get("Retry") or []):
            if _error_matches(error, retrier.get("ErrorEquals") or []):
                self.attempts[index] = self.attempts.get(index, 0) + 1
                if self.attempts[index] <= int(retrier.get("MaxAttempts", 3)):
                    return " (retrying)"
                break  # the first matching retrier decides; exhausted, the Catchers get it
        for catcher in state.get("Catch") or []:
            if _error_matches(error, catcher.get("ErrorEquals") or []):
                return f" (caught → {catcher.get('Next')})"
        return ""


def _error_matches(error: str, names: list[str]) -> bool:
    if error in names or "States.ALL" in names:
        return True
    return "States.TaskFailed" in names and error != "States.Timeout"


def _all_states(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    states: dict[str, dict[str, Any]] = {}
    for name, state in (definition.get("States") or {}).items():
        states[name] = state
        for branch in state.get("Branches") or []:
            states.update(_all_states(branch))
        for key in ("Iterator", "ItemProcessor"):
            if isinstance(state.get(key), dict):
                states.update(_all_states(state[key]))
    return states


_EXECUTION_KEY = re.compile(r"^(.*-[0-9a-f]{4})[0-9a-f]{36}(-r\d+)?$")


def short_name(name: str) -> str:
    """won-to-stripe-3f2a… for won-to-stripe-3f2a<36 more hex digits>: enough to tell runs apart."""
    found = _EXECUTION_KEY.match(name)
    return f"{found.group(1)}…{found.group(2) or ''}" if found else name


def describe_bus_event(event: Any) -> str:
    if not isinstance(event, dict):
        return "event"
    detail = event.get("detail")
    if not isinstance(detail, dict):
        detail = {}
    parts = [str(event.get("detail-type", "event"))]
    if detail.get("tenant"):
        parts.append(f"{detail['tenant']}/{detail.get('source', '?')}/{detail.get('object', '?')}"
                     f" {detail.get('action', '')} {detail.get('record_id', '')}".rstrip())
    return " ".join(parts)


def summarise(result: Any) -> str:
    if isinstance(result, dict) and "started" in result:
        started = result.get("started") or []
        duplicates = result.get("duplicates") or []
        not_matched = result.get("not_matched") or {}
        text = f"{len(started)} started, {len(duplicates)} duplicate(s), {len(not_matched)} not matched"
        reasons = "; ".join(f"{rule}: {reason}" for rule, reason in list(not_matched.items())[:3])
        return f"{text} ({reasons})" if reasons else text
    return "✓"

