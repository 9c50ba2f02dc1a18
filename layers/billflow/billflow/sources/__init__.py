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
    """The adapter for a tenant's source: a built-in CRM by its name, else the tenant's connection of that name
    when its type is "generic" (so `pipedrive`, `close`, ... each have their own scheme and mapping). Built-in
    names never read a secret here; the connection is read through the secret store's cache."""
    if name in _ADAPTERS and name != "generic":
        return get_source(name)
    # deferred: only generic sources read their connection at ingest
    from billflow.errors import ConfigurationError
    from billflow.sources.generic import CONNECTION_TYPE, GenericAdapter
    from billflow.storage.secrets import get_secret_store

    try:
        connection = get_secret_store().connection(tenant, name)
    except ConfigurationError:
        connection = None
    if connection is None or connection.type != CONNECTION_TYPE:
        return get_source(name)  # "generic" unconfigured says what to do; any other name is unknown
    return GenericAdapter(name, connection.settings)
