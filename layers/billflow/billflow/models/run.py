"""The document one execution carries from state to state (its input, grown by each task's result).

The filter (or the scheduler, for date-triggered rules) builds it; each task reads what it needs and the
state machine stores the task's answer at its ResultPath: $.lookup, $.step, $.counted, $.dispatched,
$.written. The format function's decide and resume tasks answer with the whole document. Everything in it
is JSON.

The run's actions, in order: `actions` (the immediate actions of the blocks that run), then each time-based
group of `timed` (sorted by due time). `results` has one entry per action done (or skipped), so the next
action is always number len(results) of that sequence. `waited` counts the groups whose time has come.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from billflow.models.events import CrmEvent
from billflow.models.rules import Action, Rule, UsageAlert


def utc_text(instant: datetime) -> str:
    """The form Step Functions' Wait TimestampPath takes: UTC, whole seconds, Z."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_utc(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class LogKeys(BaseModel):
    model_config = ConfigDict(defer_build=True)
    rule_key: str
    record_key: str
    expires_at: str  # a number, as the string DynamoDB's N wants
    trigger: str = ""  # what started the run when it was not a webhook ("sweep"): marked on every log item


class TimedGroup(BaseModel):
    """One time-based group of a block, placed in time when the run started (or when it was decided)."""

    model_config = ConfigDict(defer_build=True)
    block: int
    group: int = Field(description="Its index in the block's time_based list")
    due: str = Field(description="When to act, UTC, YYYY-MM-DDTHH:MM:SSZ (a Wait state's TimestampPath)")
    label: str = Field(description="'2d after the trigger', '3d before closeDate at 09:00'")
    actions: list[Action]
    recheck: bool = False
    field: str | None = Field(default=None, description="The date field the time follows (re-read then)")
    skip: str = Field(default="", description="Why it will not run (its time has passed, no date), if so")


class RunState(BaseModel):
    model_config = ConfigDict(extra="allow", defer_build=True)  # task results ride along under their ResultPaths

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
    blocks: list[int] = Field(default_factory=list, description="The blocks whose actions this run carries")
    timed: list[TimedGroup] = Field(default_factory=list)
    waited: int = 0
    recheck: bool = Field(default=False, description="Decide the criteria after Lookup (company/contact "
                                                     "criteria, date triggers)")
    refresh_record: bool = Field(default=False, description="Lookup fetches the record from the CRM too")
    held: dict[str, bool] = Field(default_factory=dict, description="Transitions as the filter decided them")
    trigger_at: str = Field(default="", description="When the rule fired (UTC ISO)")
    usage_alert: UsageAlert | None = None

    def sequence(self) -> list[Action]:
        """Every action of the run in order: the immediate ones, then each time-based group's."""
        return [*self.actions, *(a for group in self.timed for a in group.actions)]

    def group_at(self, index: int) -> int | None:
        """The position in `timed` of the group action number `index` belongs to; None if immediate."""
        end = len(self.actions)
        if index < end:
            return None
        for position, group in enumerate(self.timed):
            end += len(group.actions)
            if index < end:
                return position
        return None

    def record(self) -> dict[str, Any]:
        """The record as last seen: fetched again from the CRM after a wait, else the event's."""
        fresh = self.lookup.get("record")
        return fresh if isinstance(fresh, dict) else self.event.record

    def context(self) -> dict[str, Any]:
        """What templates and mappings may read: the record, what lookup fetched, earlier results."""
        last = self.results[-1] if self.results else {}
        return {
            "event": self.event.model_dump(mode="json"),
            **self.lookup,
            "record": self.record(),
            "results": self.results,
            "dispatch": last,
            "rule": {"id": self.rule.id, "name": self.rule.name},
        }
