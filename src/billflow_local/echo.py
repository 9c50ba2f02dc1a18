"""Progress output: the lines the runtime says, echoed in order by one writer thread."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

Echo = Callable[[str], None]


class EchoLines:
    """Progress lines, echoed in order by one writer thread while the runtime runs.

    Echoing is a write to a terminal or pipe: a system call, after which the thread queues for the GIL
    again. On a request's thread, that wait would hold back the connection's next request, so lines are
    handed over here instead; `echo_of()` gives the echo to use (None: lines are dropped).
    """

    def __init__(self, echo_of: Callable[[], Echo | None]) -> None:
        self._echo_of = echo_of
        self._lines: deque[str] = deque()
        self._condition = threading.Condition()
        self._writing = False
        self._closing = False
        self._thread: threading.Thread | None = None

    def say(self, line: str) -> None:
        if self._thread is None:  # not running: straight through
            echo = self._echo_of()
            if echo is not None:
                echo(line)
            return
        with self._condition:
            self._lines.append(line)
            if len(self._lines) == 1:
                self._condition.notify()

    def start(self) -> None:
        self._closing = False
        self._thread = threading.Thread(target=self._write, daemon=True, name="billflow-local-echo")
        self._thread.start()

    def flush(self, timeout: float = 5) -> None:
        """Wait until every line said so far has been echoed."""
        with self._condition:
            self._condition.wait_for(lambda: not self._lines and not self._writing, timeout)

    def stop(self) -> None:
        if self._thread is None:
            return
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        self._thread.join(timeout=5)
        self._thread = None

    def _write(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._lines or self._closing)
                if not self._lines:
                    return  # closing, and every line is out
                batch = list(self._lines)
                self._lines.clear()
                self._writing = True
            try:
                echo = self._echo_of()
                for line in batch:
                    if echo is not None:
                        echo(line)
            except Exception:  # noqa: S110 - a broken terminal must not stop the runtime
                pass
            finally:
                with self._condition:
                    self._writing = False
                    self._condition.notify_all()

