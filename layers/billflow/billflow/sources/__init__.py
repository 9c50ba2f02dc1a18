"""Inbound adapters: one module per CRM that calls billflow's webhook, behind one interface."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from billflow.errors import NotFound
from billflow.models.events import CrmEvent


class SourceAdapter(Protocol):
    name: str

    def verify(
        self, *, secret: str, method: str, url: str, headers: Mapping[str, str], body: bytes,
        now: datetime, tolerance_seconds: int,
    ) -> None:
        """Raise Unauthorized unless the request carries a valid, fresh signature."""

    def parse(self, *, tenant: str, body: bytes, received_at: datetime) -> list[CrmEvent]:
        """Turn one webhook body into normalised events; raise InvalidRequest if it is not one."""


@dataclass(frozen=True)
class SkippedEvent:
    """One event of a batch left out, and why (never a secret: the reason names fields, not values)."""

    index: int  # its position in the body
    reason: str
    event_id: str | None = None


@dataclass
class ParsedBatch:
    """What one webhook body gave: the valid events, and every event left out with its reason."""

    events: list[CrmEvent]
    skipped: list[SkippedEvent] = field(default_factory=list)


@runtime_checkable
class BatchSource(Protocol):
    """A source whose body carries many events, each valid or not on its own (HubSpot: up to 100 per POST,
    and any 4xx makes HubSpot resend the whole batch for 24 hours). Ingest publishes the valid events and
    answers 2xx, logging the others; a body that is no batch at all still raises InvalidRequest."""

    def parse_batch(self, *, tenant: str, body: bytes, received_at: datetime) -> ParsedBatch: ...


@runtime_checkable
class ConfigurableSource(Protocol):
    """A source with per-tenant options kept next to its signing secret (accepted signature versions, the
    exact webhook URL, the portals it serves): ingest verifies and parses with configured(settings)."""

    def configured(self, settings: Mapping[str, Any]) -> SourceAdapter: ...


# name -> module holding ADAPTER; imported on first use so a cold start loads only its own source.
_ADAPTERS = {
    "twenty": "billflow.sources.twenty",
    "hubspot": "billflow.sources.hubspot",
}


def get_source(name: str) -> SourceAdapter:
    module = _ADAPTERS.get(name)
    if module is None:
        raise NotFound(f"unknown source {name!r}", known=sorted(_ADAPTERS))
    adapter: SourceAdapter = importlib.import_module(module).ADAPTER
    return adapter


def known_sources() -> list[str]:
    return sorted(_ADAPTERS)
