"""The interface every outbound connector implements."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from billflow.errors import ConfigurationError
from billflow.models.documents import DispatchResult, InvoiceDraft
from billflow.storage.secrets import Connection


@dataclass(frozen=True)
class SendContext:
    """Who is sending, and the key that makes a retried send a no-op at the target."""

    tenant: str
    idempotency_key: str
    crm_record: dict[str, Any] = field(default_factory=dict)


def step_key(idempotency_key: str, step: str, max_length: int) -> str:
    """The idempotency key of one step of a run ("<run key>:<step>") within a target's key length; a run key
    too long is hashed (stably, so a retry sends the same key)."""
    key = f"{idempotency_key}:{step}"
    if len(key) <= max_length:
        return key
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return f"{digest}:{step}"[:max_length]


class ConnectionReport(BaseModel):
    """What one harmless documented read says about a connection: what a rule author needs to know before
    the first deal (the account it reaches, its currency and tax regime, what its grant allows)."""

    connection: str
    kind: str
    ok: bool = True
    checked: str = Field(default="", description="The read made, e.g. GET /v1/account")
    account_name: str | None = None
    account_id: str | None = None
    currency: str | None = Field(default=None, description="The account's base (home, default) currency")
    multicurrency: bool | None = None
    tax_regime: str | None = None
    data_centre: str | None = None
    can_create: dict[str, bool | None] = Field(
        default_factory=dict, description="Document type -> whether the grant allows creating it; None: unknown")
    notes: list[str] = Field(default_factory=list)
    error: str | None = None


class Testable(ABC):
    """A connection billflow can check before the first deal, with a read that changes nothing."""

    kind: ClassVar[str]

    def test_connection(self, connection: Connection, tenant: str) -> ConnectionReport:
        """The documented read; tokens are refreshed as a real call would. Errors are raised as in a send."""
        raise ConfigurationError(f"{self.kind} connections cannot be tested")


class Connector(Testable):
    """A system billflow sends to. Document targets implement create_document; CRMs the record calls."""

    kind: ClassVar[str]
    document_types: ClassVar[frozenset[str]] = frozenset()

    def create_document(
        self, draft: InvoiceDraft, connection: Connection, context: SendContext
    ) -> DispatchResult:
        raise ConfigurationError(f"{self.kind} does not create billing documents")

    def preview_document(
        self, draft: InvoiceDraft, connection: Connection, context: SendContext
    ) -> list[dict[str, Any]]:
        """The requests create_document would send, for dry runs; nothing is sent."""
        raise ConfigurationError(f"{self.kind} cannot preview billing documents")

    def send_payload(
        self, payload: dict[str, Any], connection: Connection, context: SendContext
    ) -> DispatchResult:
        raise ConfigurationError(f"{self.kind} does not take raw payloads")


FilterOp = Literal["eq", "neq", "gt", "gte", "lt", "lte", "in", "is_null", "is_not_null"]


@dataclass(frozen=True)
class RecordFilter:
    """One condition of a CRM search, in the CRM's own field names (translated by each connector)."""

    field: str
    op: FilterOp
    value: Any = None


@dataclass(frozen=True)
class RecordQuery:
    """Records of one object that meet every filter, optionally changed in [updated_after, updated_before)
    (the CRM's own last-modified field): what the reconciliation sweep and date-based rules ask a CRM."""

    object_name: str
    filters: tuple[RecordFilter, ...] = ()
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    page_size: int = 100
    fields: tuple[str, ...] = ()  # record fields the caller reads beyond the filtered ones (see get_record)


@dataclass(frozen=True)
class RecordPage:
    records: list[dict[str, Any]]
    next_cursor: str | None = None  # None: the last page


class CrmConnector(Testable):
    """A CRM billflow reads from (lookup) and writes back to."""

    kind: ClassVar[str]

    @abstractmethod
    def get_record(
        self, connection: Connection, object_name: str, record_id: str, fields: Collection[str] = ()
    ) -> dict[str, Any] | None:
        """The record, or None when the CRM says it does not exist. fields: the record's field paths the caller
        reads, for a CRM that answers only the fields asked for (HubSpot); the others answer whole records."""

    @abstractmethod
    def update_record(
        self, connection: Connection, object_name: str, record_id: str, fields: dict[str, Any]
    ) -> None: ...

    @abstractmethod
    def lookup(self, connection: Connection, object_name: str, record: dict[str, Any]) -> dict[str, Any]:
        """What the formatters need beyond the record: company, contacts, line items."""

    # The record's last-modified field, in the CRM's own name (issue 11: ask-the-CRM and sweep versions).
    updated_fields: ClassVar[tuple[str, ...]] = ("updatedAt", "hs_lastmodifieddate", "update_time", "updated_at")

    def modified_at(self, connection: Connection, record: dict[str, Any]) -> datetime | None:
        """When the CRM last changed the record (its last-modified field), or None when it does not say."""
        configured = connection.settings.get("updated_field")
        for name in ([configured] if isinstance(configured, str) else []) + list(self.updated_fields):
            value: Any = record
            for part in name.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            when = _as_time(value)
            if when is not None:
                return when
        return None

    def search_records(
        self, connection: Connection, query: RecordQuery, cursor: str | None = None
    ) -> RecordPage:
        """One page of the records matching the query (cursor from the previous page), within the CRM's rate
        limits; connectors that cannot search say so."""
        raise ConfigurationError(f"{self.kind} cannot search records")


def iter_records(
    crm: CrmConnector, connection: Connection, query: RecordQuery, max_records: int = 10_000
) -> Iterator[dict[str, Any]]:
    """Every record matching the query, page after page, at most max_records (a bound, not a silent cut:
    callers that may exceed it split their window)."""
    cursor: str | None = None
    seen = 0
    while True:
        page = crm.search_records(connection, query, cursor)
        for record in page.records:
            if seen >= max_records:
                return
            seen += 1
            yield record
        if page.next_cursor is None or not page.records:
            return
        cursor = page.next_cursor


def _as_time(value: Any) -> datetime | None:
    """ISO 8601 text or Unix milliseconds/seconds (HubSpot sends both) as an aware time; None otherwise."""
    from datetime import UTC

    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return datetime.fromtimestamp(value / 1000 if value > 100_000_000_000 else value, UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None
