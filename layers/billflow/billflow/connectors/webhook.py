"""Signed generic webhooks: any HTTPS endpoint that takes JSON.

Signature: X-Billflow-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")> with the Unix
timestamp in X-Billflow-Timestamp, so a receiver can reject replays as it would Stripe's.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from billflow.connectors import http
from billflow.connectors.base import Connector, SendContext
from billflow.models.documents import DispatchResult, InvoiceDraft
from billflow.models.rules import DOCUMENT_ACTIONS
from billflow.storage.secrets import Connection

SIGNATURE_HEADER = "X-Billflow-Signature"
TIMESTAMP_HEADER = "X-Billflow-Timestamp"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class WebhookConnector(Connector):
    kind = "webhook"
    document_types = DOCUMENT_ACTIONS

    def create_document(
        self, draft: InvoiceDraft, connection: Connection, context: SendContext
    ) -> DispatchResult:
        payload = {
            "type": draft.document_type,
            "idempotency_key": context.idempotency_key,
            "document": draft.model_dump(mode="json"),
        }
        return self.send_payload(payload, connection, context)

    def preview_document(
        self, draft: InvoiceDraft, connection: Connection, context: SendContext
    ) -> list[dict[str, Any]]:
        payload = {"type": draft.document_type, "idempotency_key": context.idempotency_key,
                   "document": draft.model_dump(mode="json")}
        return [{"method": "POST", "url": connection.require("url"), "json": payload}]

    def send_payload(
        self, payload: dict[str, Any], connection: Connection, context: SendContext
    ) -> DispatchResult:
        url = connection.require("url")
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": context.idempotency_key}
        secret = connection.settings.get("secret")
        if secret:
            timestamp = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = signature(secret, timestamp, body)
        answer = http.request("POST", url, headers=headers, body=body, target="webhook")
        external_id: str | None = None
        try:
            reply = answer.json()
        except ValueError:
            reply = None
        if isinstance(reply, dict):
            found = reply.get("id") or reply.get("external_id")
            external_id = str(found) if found is not None else None
        return DispatchResult(
            external_id=external_id or context.idempotency_key, details={"status": answer.status}
        )
