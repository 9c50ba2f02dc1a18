"""Workflow rules: the documents admins keep in git as YAML and billflow keeps in the rules table."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

RULE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
NAME_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
TIME_OF_DAY = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
# "2d", "3h", "90m", "1d 12h": days, hours and minutes, each at most once, in that order.
DURATION = re.compile(r"^\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*$")
# A Step Functions standard execution lives at most a year: no wait may be longer.
MAX_WAIT_DAYS = 365

TriggerOn = Literal["created", "edited", "created_or_edited", "deleted"]

# "stripe.invoice" is the short spelling of {type: invoice, system: stripe}.
DOCUMENT_ACTIONS = frozenset(
    {"invoice", "estimate", "sales_receipt", "paid_invoice", "refund_receipt", "expense"}
)
OTHER_ACTIONS = frozenset({"webhook", "field_update", "email_alert", "notification", "expression"})
# What a rule's error branch may do when a run fails or is limited.
ON_FAILURE_ACTIONS = frozenset({"notification", "email_alert", "field_update", "webhook"})
# Criteria fields under these roots read what Lookup fetched (the record's company and contact), not the
# record: the filter cannot decide them, the run decides them right after Lookup.
LOOKUP_ROOTS = frozenset({"company", "contact"})


def is_lookup_field(path: str) -> bool:
    return path.split(".", 1)[0] in LOOKUP_ROOTS


def parse_duration(text: str) -> timedelta:
    """'2d', '3h', '45m', '1d 12h' -> timedelta; ValueError for anything else."""
    found = DURATION.match(text) if isinstance(text, str) else None
    if not found or not any(found.groups()):
        raise ValueError(f"{text!r} is not a duration; write e.g. 2d, 3h, 45m or 1d 12h")
    days, hours, minutes = (int(g or 0) for g in found.groups())
    return timedelta(days=days, hours=hours, minutes=minutes)


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}; use an IANA name such as Europe/Paris or UTC") from None
    return name


def check_time_of_day(value: str) -> str:
    if not TIME_OF_DAY.match(value):
        raise ValueError(f"{value!r} is not a time of day; write HH:MM, e.g. 09:00")
    return value


TimeOfDay = Annotated[str, AfterValidator(check_time_of_day)]  # HH:MM
TimeZoneName = Annotated[str, AfterValidator(check_timezone)]  # IANA: Europe/Paris, UTC


class Criterion(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    field: str = Field(min_length=1)
    comparator: str
    value: Any = None


class Trigger(BaseModel):
    """An event trigger: a record was created, edited or deleted in the CRM."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    type: Literal["event"] = "event"
    on: TriggerOn = "edited"
    when: Literal["every_edit", "first_edit"] = "every_edit"
    fields: list[str] | None = Field(default=None, description="Watched fields; None watches every field")


class DateTrigger(BaseModel):
    """A date trigger: the rule runs when a date field of a record, shifted by offset_days, comes round.

    The scheduler (functions/scheduler) starts these runs; it knows a record once billflow has received a
    webhook for it (every event indexes the record's date). Criteria are checked against the record as
    the CRM holds it when the date comes.
    """

    model_config = ConfigDict(extra="forbid", defer_build=True)

    type: Literal["date"]
    field: str = Field(min_length=1, description="The record's date or date-time field, e.g. closeDate")
    offset_days: int = Field(default=0, ge=-MAX_WAIT_DAYS, le=MAX_WAIT_DAYS,
                             description="Days after (negative: before) the field's date")
    at: TimeOfDay = Field(default="00:00", description="Time of day (HH:MM) in the trigger's time zone")
    timezone: TimeZoneName | None = Field(default=None, description="IANA time zone; default: the rule's")
    repeat: Literal["once", "monthly", "yearly"] = Field(
        default="once", description="once, or again every month / year on the same day (renewals)"
    )

    # What code written for event triggers reads from any trigger.
    @property
    def when(self) -> str:
        return "every_edit"

    @property
    def fields(self) -> list[str] | None:
        return None


class Action(BaseModel):
    """One thing a rule does. Options are per type; connectors validate their own options."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    type: str
    system: str | None = Field(default=None, description="Target system of a document action (stripe, ...)")
    connection: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    field: str | None = Field(default=None, description="field_update: the CRM field to set")
    value: Any = None
    write_back_field: str | None = Field(
        default=None, description="Store the created document's id on this field of the CRM record"
    )

    @model_validator(mode="before")
    @classmethod
    def _split_system(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("type"), str) and "." in data["type"]:
            system, _, kind = data["type"].partition(".")
            data = {**data, "type": "field_update" if system == "crm" else kind}
            if system != "crm":
                data.setdefault("system", system)
        return data

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in DOCUMENT_ACTIONS | OTHER_ACTIONS:
            known = ", ".join(sorted(DOCUMENT_ACTIONS | OTHER_ACTIONS))
            raise ValueError(f"unknown action type {value!r}; known: {known}")
        return value

    @property
    def limit_key(self) -> str:
        """What the daily limit counts: document actions by document type, the rest by their type."""
        return self.type


class TimeBasedActions(BaseModel):
    """Actions that run later: N minutes, hours or days after the trigger, or relative to a date field.

        - after: 2d                                  2 days after the rule fired
        - after: 1d, at: "09:00"                     the next day at 09:00 (rule's time zone)
        - before: 3d, field: closeDate, at: "09:00"  3 days before the record's closeDate, at 09:00
        - field: closeDate, at: "09:00"              on closeDate at 09:00

    The run waits in a Step Functions Wait state. With recheck_criteria, the record is fetched again from
    the CRM when the time comes and the block's criteria are checked against it; if they no longer hold,
    the actions are skipped (logged "skipped"). A time already past when the rule fires is skipped too.
    """

    model_config = ConfigDict(extra="forbid", defer_build=True)

    after: str | None = Field(default=None, description="Duration after the trigger or the field's date")
    before: str | None = Field(default=None, description="Duration before the field's date (needs field)")
    field: str | None = Field(default=None, description="Date field of the record the time is relative to")
    at: TimeOfDay | None = Field(default=None, description="Time of day (HH:MM) in the rule's time zone")
    recheck_criteria: bool = Field(
        default=False, description="Check the block's criteria again, on the record as it is then"
    )
    actions: list[Action] = Field(default_factory=list)

    @field_validator("after", "before")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if parse_duration(value) > timedelta(days=MAX_WAIT_DAYS):
            raise ValueError(f"at most {MAX_WAIT_DAYS} days: a run waits at most a year")
        return value

    @model_validator(mode="after")
    def _when_is_clear(self) -> TimeBasedActions:
        if self.after is not None and self.before is not None:
            raise ValueError("give after or before, not both")
        if self.before is not None and self.field is None:
            raise ValueError("before needs a field (a run cannot act before its own trigger)")
        if self.after is None and self.before is None and self.field is None:
            raise ValueError("say when: after (e.g. 2d), or a field with before/after/at")
        return self

    @property
    def offset(self) -> timedelta:
        if self.after is not None:
            return parse_duration(self.after)
        if self.before is not None:
            return -parse_duration(self.before)
        return timedelta(0)

    def describe(self) -> str:
        """'2d after the trigger', '3d before closeDate at 09:00'."""
        base = self.field or "the trigger"
        if self.after is not None:
            text = f"{self.after.strip()} after {base}"
        elif self.before is not None:
            text = f"{self.before.strip()} before {base}"
        else:
            text = f"on {base}"
        return f"{text} at {self.at}" if self.at else text


class Block(BaseModel):
    """Criteria joined by a pattern, and what to do when they hold: now, and later."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    criteria: list[Criterion] = Field(default_factory=list, max_length=10)
    pattern: str | None = Field(default=None, description='e.g. "(1 AND 2) OR 3"; default: all criteria')
    actions: list[Action] = Field(default_factory=list, description="Immediate actions")
    time_based: list[TimeBasedActions] = Field(default_factory=list, max_length=10,
                                               description="Actions that run later (Step Functions waits)")

    def every_action(self) -> list[Action]:
        """Its actions now, then its time-based groups' in order."""
        return [*self.actions, *(a for group in self.time_based for a in group.actions)]


_BLOCK_KEYS = ("criteria", "pattern", "actions", "time_based")


# --- reconciliation sweep (issue 11) ------------------------------------------------------------------
MIN_SWEEP_EVERY = timedelta(minutes=5)
MAX_SWEEP_WINDOW = timedelta(days=31)


class Sweep(BaseModel):
    """How often the reconciliation sweep asks the CRM for this rule's records, and how far back."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    every: str = Field(default="1h", description="How often, e.g. 1h, 30m, 1d (at least 5m)")
    window: str = Field(default="26h", description="Records changed this far back, e.g. 26h (at least `every`)")

    @model_validator(mode="after")
    def _durations(self) -> Sweep:
        every, window = parse_duration(self.every), parse_duration(self.window)
        if every < MIN_SWEEP_EVERY:
            raise ValueError(f"sweep.every is at least {MIN_SWEEP_EVERY.seconds // 60}m (the CRM's rate limits)")
        if window < every:
            raise ValueError("sweep.window is at least sweep.every, or changes between two sweeps are never read")
        if window > MAX_SWEEP_WINDOW:
            raise ValueError(f"sweep.window is at most {MAX_SWEEP_WINDOW.days}d")
        return self

    @property
    def every_delta(self) -> timedelta:
        return parse_duration(self.every)

    @property
    def window_delta(self) -> timedelta:
        return parse_duration(self.window)


# --- line items (issue 11) -------------------------------------------------------------------------
def requires_line_items(action: Action) -> bool:
    """A document action with require_line_items: true runs only on a record that has line items."""
    return action.type in DOCUMENT_ACTIONS and action.options.get("require_line_items") is True


def block_requires_line_items(block: Block) -> list[Action]:
    """The block's document actions (now or later) that require line items."""
    return [a for a in block.every_action() if requires_line_items(a)]


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    id: str
    name: str = ""
    tenant: str = ""
    source: str
    object: str
    active: bool = True
    order: int = 0
    trigger: Annotated[Trigger | DateTrigger, Field(discriminator="type")] = Field(default_factory=Trigger)
    timezone: TimeZoneName = Field(default="UTC", description="IANA time zone of dates in criteria and times of day")
    blocks_match: Literal["first", "every"] = Field(
        default="first",
        description="Blocks are evaluated in order: run only the first matching block (first, the default) "
                    "or every matching block (every)",
    )
    blocks: list[Block] = Field(default_factory=list, max_length=10)
    on_failure: list[Action] = Field(
        default_factory=list,
        description="Run once when a run fails or is limited (notification, email_alert, field_update, webhook); "
                    "{{ failure.status }}, {{ failure.reason }}, {{ failure.error }} and {{ failure.execution }} "
                    "say what happened",
    )
    once_per: Literal["record", "transition"] = Field(
        default="record",
        description="Document actions make one document of a type per record and rule (record, the default), "
                    "or one per transition (a deal won, reopened and won again is invoiced twice)",
    )
    sweep: Sweep | None = Field(
        default=None,
        description="Reconciliation sweep: how often to ask the CRM for matching records with no document yet "
                    "(catches missed webhooks), e.g. {every: 1h, window: 26h}",
    )
    version: int = 1

    @model_validator(mode="before")
    @classmethod
    def _single_block_shorthand(cls, data: Any) -> Any:
        """Top-level criteria/pattern/actions/time_based are the one-block spelling of a rule."""
        if not isinstance(data, dict):
            return data
        if any(k in data for k in _BLOCK_KEYS):
            if "blocks" in data:
                raise ValueError("give either blocks or top-level criteria/pattern/actions, not both")
            data = dict(data)
            block = {k: data.pop(k) for k in _BLOCK_KEYS if k in data}
            data["blocks"] = [block]
        trigger = data.get("trigger")
        if isinstance(trigger, dict) and "type" not in trigger:
            data = {**data, "trigger": {"type": "event", **trigger}}
        return data

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if not RULE_ID.match(value):
            raise ValueError("rule id: lowercase letters, digits and dashes, at most 63 characters")
        return value

    @field_validator("source", "object")
    @classmethod
    def _valid_segment(cls, value: str) -> str:
        if not NAME_SEGMENT.match(value):
            raise ValueError("letters, digits, '_', '.', '-' only")
        return value

    @field_validator("on_failure")
    @classmethod
    def _error_branch(cls, actions: list[Action]) -> list[Action]:
        for action in actions:
            if action.type not in ON_FAILURE_ACTIONS:
                raise ValueError(f"on_failure runs {', '.join(sorted(ON_FAILURE_ACTIONS))}; not {action.type} "
                                 f"(an error branch tells people and marks the record, it makes no documents)")
        return actions

    @property
    def is_date_triggered(self) -> bool:
        return isinstance(self.trigger, DateTrigger)

    @property
    def first_match_only(self) -> bool:
        return self.blocks_match == "first"

    def watched_paths(self) -> set[str]:
        """Every record field a criterion reads: what billflow must remember of a record between events.

        Fields of the looked-up company and contact are not the record's: they are read after Lookup.
        """
        return {c.field for b in self.blocks for c in b.criteria if not is_lookup_field(c.field)}

    def record_fields(self) -> set[str]:
        """Every record field the run reads: its criteria's, its date trigger's and its waits' date fields
        (what Lookup asks for when it reads the record again from a CRM that answers only what is asked)."""
        dates = {self.trigger.field} if isinstance(self.trigger, DateTrigger) else set()
        waits = {t.field for b in self.blocks for t in b.time_based if t.field and not is_lookup_field(t.field)}
        return self.watched_paths() | dates | waits


class UsageAlert(BaseModel):
    """Tell admins once a day when an action type's daily count reaches a share of its limit."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    threshold_percent: int = Field(default=80, ge=1, le=100)
    recipients: list[str] = Field(default_factory=list, max_length=10,
                                  description="Email addresses (needs SES_FROM_ADDRESS); the topic always")


class FailureDigest(BaseModel):
    """A digest of failed and limited runs since the previous one, at a set time."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    frequency: Literal["daily", "weekly", "off"] = Field(default="daily", description="off: kept, never sent")
    at: TimeOfDay = Field(default="08:00", description="HH:MM in timezone")
    weekday: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"] = Field(
        default="monday", description="weekly digests: the day they are sent"
    )
    timezone: TimeZoneName = "UTC"
    recipients: list[str] = Field(default_factory=list, max_length=10)


class TenantSettings(BaseModel):
    """Per-tenant knobs kept beside the rules."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    daily_limits: dict[str, int] = Field(default_factory=dict, description="action type -> sends per day")
    usage_alert: UsageAlert | None = Field(default=None, description="Daily usage-threshold notification")
    failure_digest: FailureDigest | None = Field(default=None, description="Failure-log notification digest")
    default_daily_limit: int | None = Field(
        default=None, ge=0, description="Sends per action type and day where daily_limits names none "
                                        "(default: the stack's DEFAULT_DAILY_LIMIT)")
    default_timezone: TimeZoneName | None = Field(
        default=None, description="IANA zone of the tenant's rules and digests where they name none (default UTC)")
