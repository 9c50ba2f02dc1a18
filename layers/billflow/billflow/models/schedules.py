"""Recurring schedules (Zoho Books' custom schedules as the floor): when they fire, and what they run.

A schedule document lives beside the rules in the rules-as-code YAML (a `schedules:` list). When it fires
is its `repeat` (rules/calendar.py computes the firings); what it runs is a rule's actions, over the
records of a CRM query, or once (a digest). Times are local wall-clock times in the schedule's `timezone`.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from billflow.models.rules import RULE_ID, TimeOfDay, TimeZoneName

MAX_SCHEDULES_PER_TENANT = 10
MAX_START_AHEAD_DAYS = 366  # "no more than one year ahead" (a leap year's 366 days)
MAX_QUERY_RECORDS = 5_000  # one firing handles at most this many records (documented bound)

Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS: tuple[str, ...] = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
Every = Literal["day", "week", "month", "year"]
FilterOp = Literal["eq", "neq", "gt", "gte", "lt", "lte", "in", "is_null", "is_not_null"]
LOCAL_START = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}$")


class Repeat(BaseModel):
    """How often: every N days (optionally weekdays only), weeks (on chosen days), months or years (on a
    date, the last day, or the nth weekday)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    every: Every
    interval: int = Field(default=1, ge=1, le=366, description="every 2 weeks, every 4 months...")
    skip_weekends: bool = Field(default=False, description="every: day only - Saturdays and Sundays skipped")
    weekdays: list[Weekday] = Field(default_factory=list, description="every: week - the days it fires on "
                                                                       "(default: the start's weekday)")
    day: int | Literal["last"] | None = Field(default=None, description="every: month/year - day of the month "
                                                                         "(1-31) or last")
    nth: int | Literal["last"] | None = Field(default=None, description="every: month/year - 1..5 or last, "
                                                                         "with weekday")
    weekday: Weekday | None = Field(default=None, description="every: month/year - with nth")
    month: int | None = Field(default=None, ge=1, le=12, description="every: year - the month (default: "
                                                                      "the start's)")

    @field_validator("day")
    @classmethod
    def _day(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and not 1 <= value <= 31:
            raise ValueError("day is 1..31 or last")
        return value

    @field_validator("nth")
    @classmethod
    def _nth(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and not 1 <= value <= 5:
            raise ValueError("nth is 1..5 or last")
        return value

    @model_validator(mode="after")
    def _fits_kind(self) -> Repeat:
        if self.skip_weekends and self.every != "day":
            raise ValueError("skip_weekends is for every: day")
        if self.weekdays and self.every != "week":
            raise ValueError("weekdays is for every: week (monthly and yearly use nth + weekday)")
        if len(set(self.weekdays)) != len(self.weekdays):
            raise ValueError("weekdays: a day is listed twice")
        if self.every in ("day", "week") and (self.day is not None or self.nth is not None
                                              or self.weekday is not None or self.month is not None):
            raise ValueError(f"every: {self.every} takes no day, nth, weekday or month")
        if self.month is not None and self.every != "year":
            raise ValueError("month is for every: year")
        if (self.nth is None) != (self.weekday is None):
            raise ValueError("nth and weekday go together (e.g. nth: 2, weekday: saturday)")
        if self.nth is not None and self.day is not None:
            raise ValueError("give day or nth + weekday, not both")
        return self


class Ends(BaseModel):
    """After N firings, on a date (inclusive, in the schedule's time zone), or never (both unset)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    after: int | None = Field(default=None, ge=1, le=10_000, description="firings (DST-skipped ones never "
                                                                           "happen, so they do not count)")
    on: date | None = Field(default=None, description="last local date a firing may fall on (inclusive)")

    @model_validator(mode="after")
    def _one(self) -> Ends:
        if self.after is not None and self.on is not None:
            raise ValueError("give ends.after or ends.on, not both")
        return self


class QueryFilter(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    field: str = Field(min_length=1)
    op: FilterOp = "eq"
    value: Any = None


class ScheduleQuery(BaseModel):
    """The CRM's own search: the records of `object` meeting every filter (CrmConnector.search_records)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    filters: list[QueryFilter] = Field(default_factory=list, max_length=10)
    max_records: int = Field(default=MAX_QUERY_RECORDS, ge=1, le=MAX_QUERY_RECORDS)


class Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    id: str
    name: str = ""
    tenant: str = ""
    active: bool = True
    timezone: TimeZoneName = "UTC"
    starts: str = Field(description="Local date and time of the start, YYYY-MM-DDTHH:MM (at most a year ahead)")
    at: TimeOfDay | None = Field(default=None, description="Time of day it fires (HH:MM); default: the start's")
    repeat: Repeat | None = Field(default=None, description="None: fires once, at the start")
    ends: Ends = Field(default_factory=Ends)
    rule: str = Field(description="The rule whose actions run (its source and object say which CRM records)")
    query: ScheduleQuery | None = Field(default=None, description="Records to run the rule for; None: once")
    version: int = 1

    @field_validator("id", "rule")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if not RULE_ID.match(value):
            raise ValueError("lowercase letters, digits and dashes, at most 63 characters")
        return value

    @field_validator("starts", mode="before")
    @classmethod
    def _starts(cls, value: Any) -> Any:
        if isinstance(value, datetime):
            return value.strftime("%Y-%m-%dT%H:%M")
        if isinstance(value, date):
            return f"{value.isoformat()}T00:00"
        if isinstance(value, str) and LOCAL_START.match(value.strip()):
            text = value.strip().replace(" ", "T")
            try:
                datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(f"{value!r} is not a date and time") from None
            return text
        raise ValueError("starts is a local date and time, YYYY-MM-DDTHH:MM (e.g. 2026-01-31T09:00)")

    @property
    def start(self) -> datetime:
        """The start as a naive local date-time."""
        return datetime.fromisoformat(self.starts)

    @property
    def time_of_day(self) -> tuple[int, int]:
        if self.at is None:
            return self.start.hour, self.start.minute
        hour, minute = self.at.split(":")
        return int(hour), int(minute)
