"""The interface of an action type."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from billflow.models.documents import DispatchResult
from billflow.models.rules import Action
from billflow.models.run import RunState


class ActionType(ABC):
    @abstractmethod
    def render(self, action: Action, state: RunState) -> dict[str, Any]:
        """The request this action will send, from the run's context (JSON; stored in the execution)."""

    @abstractmethod
    def send(self, action: Action, request: dict[str, Any], state: RunState, key: str) -> DispatchResult:
        """Send the rendered request once; `key` makes a retried send a no-op at the target."""

    def preview(self, action: Action, request: dict[str, Any], state: RunState, key: str) -> list[dict[str, Any]]:
        """What send would do, for dry runs: nothing is sent."""
        return [{"action": action.type, "request": request}]
