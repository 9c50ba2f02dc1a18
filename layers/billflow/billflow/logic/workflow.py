"""The document one execution carries from state to state (its input, grown by each task's result).

The filter builds it; each task reads what it needs and the state machine stores the task's answer at
its ResultPath: $.lookup, $.step, $.dispatched, $.written. Everything in it is JSON.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from billflow.models.events import CrmEvent
from billflow.models.rules import Action, Rule


class LogKeys(BaseModel):
    rule_key: str
    record_key: str
    expires_at: str  # a number, as the string DynamoDB's N wants


class RunState(BaseModel):
    model_config = ConfigDict(extra="allow")  # task results ride along under their ResultPaths

    tenant: str
    execution_key: str
    execution_name: str = ""
    transition: str
    rule: Rule
    actions: list[Action]
    event: CrmEvent
    daily_limits: dict[str, int] = Field(default_factory=dict)
    default_daily_limit: int = 500
    log: LogKeys
    results: list[dict[str, Any]] = Field(default_factory=list)
    lookup: dict[str, Any] = Field(default_factory=dict)
    dry_run: bool = False

    def context(self) -> dict[str, Any]:
        """What templates and mappings may read: the record, what lookup fetched, earlier results."""
        last = self.results[-1] if self.results else {}
        return {
            "record": self.event.record,
            "event": self.event.model_dump(mode="json"),
            **self.lookup,
            "results": self.results,
            "dispatch": last,
            "rule": {"id": self.rule.id, "name": self.rule.name},
        }
