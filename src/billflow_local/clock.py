"""A virtual clock for moto's Step Functions engine: Wait states and Retry backoff without real minutes.

moto waits with `env.program_state_event.wait(seconds)` in Wait states and `time.sleep(interval)` between
retries. Both are patched to wait on this clock instead. The clock runs at `time_scale` times real time
(1.0 by default, so nothing waits forever even if nobody advances it; 0 stops it) and `advance(seconds)`
moves it forward at once, waking every waiter whose deadline has passed.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

FAST_RETRY_SECONDS = 0.05  # what a Retry backoff sleeps with fast_retries, whatever the ASL says
_POLL_SECONDS = 0.2  # how often a waiter re-checks that its execution was not stopped meanwhile


@dataclass(frozen=True)
class Waiter:
    execution: str
    kind: str  # "Wait" (a Wait state) or "Retry" (a Retry backoff)
    state: str
    deadline: float  # on the virtual clock

    def remaining(self, now: float) -> float:
        return max(0.0, self.deadline - now)


class VirtualClock:
    def __init__(self, time_scale: float = 1.0, fast_retries: bool = False) -> None:
        if time_scale < 0:
            raise ValueError("time_scale must be >= 0")
        self.time_scale = time_scale
        self.fast_retries = fast_retries
        self._condition = threading.Condition()
        self._real_start = time.monotonic()
        self._advanced = 0.0
        self._waiters: dict[int, Waiter] = {}

    def now(self) -> float:
        """Seconds on the virtual clock since it was created."""
        return (time.monotonic() - self._real_start) * self.time_scale + self._advanced

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._condition:
            self._advanced += seconds
            self._condition.notify_all()

    def waiters(self) -> list[Waiter]:
        with self._condition:
            return list(self._waiters.values())

    def sleep(
        self, seconds: float, *, execution: str = "", kind: str = "Wait", state: str = "",
        stopped: Callable[[], bool] = lambda: False,
    ) -> None:
        """Block until the virtual clock has moved `seconds` on, or `stopped()` says the run ended."""
        if seconds <= 0:
            return
        with self._condition:
            deadline = self.now() + seconds
            token = id(threading.current_thread())
            self._waiters[token] = Waiter(execution, kind, state, deadline)
            try:
                while not stopped():
                    remaining = deadline - self.now()
                    if remaining <= 0:
                        return
                    real = remaining / self.time_scale if self.time_scale > 0 else _POLL_SECONDS
                    self._condition.wait(min(real, _POLL_SECONDS))
            finally:
                self._waiters.pop(token, None)

    # ------------------------------------------------------------------------------ moto patches
    @contextmanager
    def installed(self) -> Iterator[VirtualClock]:
        """Route moto's Wait states and Retry sleeps through this clock while the block runs."""
        # Typed as Any: these are moto internals patched in place (pinned moto version, see pyproject).
        retrier_decl: Any = importlib.import_module(
            "moto.stepfunctions.parser.asl.component.common.retry.retrier_decl")
        wait_function: Any = importlib.import_module(
            "moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function")

        clock = self
        original_wait = wait_function.WaitFunction._wait_interval
        original_retry = retrier_decl.RetrierDecl._eval_body
        original_time = retrier_decl.time
        current_env = threading.local()

        def wait_interval(self: Any, env: Any, wait_seconds: int) -> None:
            clock.sleep(
                wait_seconds, execution=_execution_name(env), kind="Wait", state=_state_name(env),
                stopped=lambda: not env.is_running(),
            )

        def retry_eval_body(self: Any, env: Any) -> None:
            current_env.value = env  # the backoff sleep below needs to know whose it is
            try:
                original_retry(self, env)
            finally:
                current_env.value = None

        def retry_sleep(seconds: float) -> None:
            if clock.fast_retries:
                time.sleep(min(seconds, FAST_RETRY_SECONDS))
                return
            env = getattr(current_env, "value", None)
            clock.sleep(
                seconds, execution=_execution_name(env), kind="Retry", state=_state_name(env),
                stopped=(lambda: not env.is_running()) if env is not None else (lambda: False),
            )

        class _RetrierTime:
            """Stands in for the `time` module inside retrier_decl: only sleep() changes."""

            def __getattr__(self, name: str) -> Any:
                return getattr(time, name)

            sleep = staticmethod(retry_sleep)

        timestamp: Any = importlib.import_module(
            "moto.stepfunctions.parser.asl.component.state.wait.wait_function.timestamp")
        original_timestamp_wait = timestamp.Timestamp._get_wait_seconds

        def utc_wait_seconds(self: Any, env: Any) -> int:
            # moto subtracts local wall time from a UTC timestamp: add the machine's UTC offset back.
            offset = datetime.now().astimezone().utcoffset() or timedelta(0)
            return int(original_timestamp_wait(self, env) + offset.total_seconds())

        wait_function.WaitFunction._wait_interval = wait_interval
        retrier_decl.RetrierDecl._eval_body = retry_eval_body
        retrier_decl.time = _RetrierTime()
        timestamp.Timestamp._get_wait_seconds = utc_wait_seconds
        try:
            yield self
        finally:
            timestamp.Timestamp._get_wait_seconds = original_timestamp_wait
            wait_function.WaitFunction._wait_interval = original_wait
            retrier_decl.RetrierDecl._eval_body = original_retry
            retrier_decl.time = original_time
            self.advance(0)  # wake anyone still waiting so they re-check whether their run is stopped


def _execution_name(env: Any) -> str:
    try:
        return str(env.states.context_object.context_object_data["Execution"]["Name"])
    except (AttributeError, KeyError, TypeError):
        return ""


def _state_name(env: Any) -> str:
    try:
        return str(env.states.context_object.context_object_data["State"]["Name"])
    except (AttributeError, KeyError, TypeError):
        return ""
