"""Inbound adapters: one module per CRM that calls billflow's webhook, behind one interface."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

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


# name -> module holding ADAPTER; imported on first use so a cold start loads only its own source.
_ADAPTERS = {
    "twenty": "billflow.sources.twenty",
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
def source_for(tenant: str, name: str) -> SourceAdapter:
    """The adapter for a tenant's source: a built-in CRM by its name, else a generic source, configured by the
    source's own secret ({prefix}/{tenant}/source/{name}: signing secret, webhook scheme, mapping), so
    `pipedrive`, `close`, ... each have theirs. Built-in names read nothing here; a generic source's secret is
    the one ingest reads for its signing secret anyway (one cached read), and ingest never reads a connection
    (its credentials for the CRM's API stay out of the internet-facing function)."""
    if name in _ADAPTERS and name != "generic":
        return get_source(name)
    # deferred: only generic sources read their configuration at ingest
    from billflow.sources.generic import GenericAdapter, is_generic
    from billflow.storage.secrets import get_secret_store

    document = get_secret_store().source_document(tenant, name)
    if document is None or not is_generic(document):
        return get_source(name)  # "generic" unconfigured says what to do; any other name is unknown
    return GenericAdapter(name, document)
