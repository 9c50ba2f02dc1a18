"""The interface every outbound connector implements."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

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


class CrmConnector(Testable):
    """A CRM billflow reads from (lookup) and writes back to."""

    kind: ClassVar[str]

    @abstractmethod
    def get_record(self, connection: Connection, object_name: str, record_id: str) -> dict[str, Any] | None:
        """The record, or None when the CRM says it does not exist."""

    @abstractmethod
    def update_record(
        self, connection: Connection, object_name: str, record_id: str, fields: dict[str, Any]
    ) -> None: ...

    @abstractmethod
    def lookup(self, connection: Connection, object_name: str, record: dict[str, Any]) -> dict[str, Any]:
        """What the formatters need beyond the record: company, contacts, line items."""
