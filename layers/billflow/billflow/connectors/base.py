"""The interface every outbound connector implements."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

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


class Connector(ABC):
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


class CrmConnector(ABC):
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
