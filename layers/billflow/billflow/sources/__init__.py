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
    "generic": "billflow.sources.generic",
}


def get_source(name: str) -> SourceAdapter:
    module = _ADAPTERS.get(name)
    if module is None:
        raise NotFound(f"unknown source {name!r}", known=sorted(_ADAPTERS))
    adapter: SourceAdapter = importlib.import_module(module).ADAPTER
    return adapter


def known_sources() -> list[str]:
    return sorted(_ADAPTERS)


# --- generic sources (issue 11) ------------------------------------------------------------------------
def source_for(tenant: str, name: str, document: Mapping[str, Any] | None = None) -> SourceAdapter:
    """The adapter for a tenant's source: a built-in CRM by its name, else a generic source, configured by the
    source's own secret ({prefix}/{tenant}/source/{name}: signing secret, webhook scheme, mapping), so
    `pipedrive`, `close`, ... each have theirs. Built-in names read nothing here; a generic source's secret is
    the one ingest reads for its signing secret anyway (it passes that `document`, so one read), and ingest
    never reads a connection (its credentials for the CRM's API stay out of the internet-facing function)."""
    if name in _ADAPTERS and name != "generic":
        return get_source(name)
    # deferred: only generic sources read their configuration at ingest
    from billflow.sources.generic import GenericAdapter, is_generic
    from billflow.storage.secrets import get_secret_store

    if document is None:
        document = get_secret_store().source_settings(tenant, name)
    if document is None or not is_generic(document):
        return get_source(name)  # "generic" unconfigured says what to do; any other name is unknown
    return GenericAdapter(name, document)
