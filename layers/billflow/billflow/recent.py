"""A container's memory of what it saw most recently, bounded: the oldest entry goes first once it is full.

Warm Lambda containers keep such memories across invocations (the execution names Step Functions holds, the
runs each delivery made); a bound keeps a long-lived container's memory flat whatever the traffic.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

Key = TypeVar("Key")
Value = TypeVar("Value")


class Recent(Generic[Key, Value]):
    def __init__(self, kept: int) -> None:
        self._kept = kept
        self._entries: OrderedDict[Key, Value] = OrderedDict()

    def get(self, key: Key) -> Value | None:
        return self._entries.get(key)

    def put(self, key: Key, value: Value) -> None:
        """Remember `value` as the newest entry, forgetting the oldest beyond the bound."""
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self._kept:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
