"""Workflow rules: the documents admins keep in git as YAML and billflow keeps in the rules table."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RULE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
NAME_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

TriggerOn = Literal["created", "edited", "created_or_edited", "deleted"]

# "stripe.invoice" is the short spelling of {type: invoice, system: stripe}.
DOCUMENT_ACTIONS = frozenset(
    {"invoice", "estimate", "sales_receipt", "paid_invoice", "refund_receipt", "expense"}
)
OTHER_ACTIONS = frozenset({"webhook", "field_update", "email_alert", "notification", "expression"})


class Criterion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str = Field(min_length=1)
    comparator: str
    value: Any = None


class Trigger(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["event"] = "event"
    on: TriggerOn = "edited"
    when: Literal["every_edit", "first_edit"] = "every_edit"
    fields: list[str] | None = Field(default=None, description="Watched fields; None watches every field")


class Action(BaseModel):
    """One thing a rule does. Options are per type; connectors validate their own options."""

    model_config = ConfigDict(extra="forbid")

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


class Block(BaseModel):
    """Criteria joined by a pattern, and what to do when they hold."""

    model_config = ConfigDict(extra="forbid")

    criteria: list[Criterion] = Field(default_factory=list, max_length=10)
    pattern: str | None = Field(default=None, description='e.g. "(1 AND 2) OR 3"; default: all criteria')
    actions: list[Action] = Field(default_factory=list)


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    name: str = ""
    tenant: str = ""
    source: str
    object: str
    active: bool = True
    order: int = 0
    trigger: Trigger = Field(default_factory=Trigger)
    blocks: list[Block] = Field(default_factory=list, max_length=10)
    on_failure: list[Action] = Field(default_factory=list)
    version: int = 1

    @model_validator(mode="before")
    @classmethod
    def _single_block_shorthand(cls, data: Any) -> Any:
        """Top-level criteria/pattern/actions are the one-block spelling of a rule."""
        if isinstance(data, dict) and any(k in data for k in ("criteria", "pattern", "actions")):
            if "blocks" in data:
                raise ValueError("give either blocks or top-level criteria/pattern/actions, not both")
            data = dict(data)
            block = {k: data.pop(k) for k in ("criteria", "pattern", "actions") if k in data}
            data["blocks"] = [block]
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

    def watched_paths(self) -> set[str]:
        """Every field a criterion reads: what billflow must remember of a record between events."""
        return {c.field for b in self.blocks for c in b.criteria}


class TenantSettings(BaseModel):
    """Per-tenant knobs kept beside the rules."""

    model_config = ConfigDict(extra="forbid")

    daily_limits: dict[str, int] = Field(default_factory=dict, description="action type -> sends per day")
