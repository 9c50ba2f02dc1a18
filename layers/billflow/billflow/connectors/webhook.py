"""Signed generic webhooks: any HTTPS endpoint that takes JSON.

Signature: X-Billflow-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")> with the Unix
timestamp in X-Billflow-Timestamp, so a receiver can reject replays as it would Stripe's (billflow.signing).
Rule-level webhook actions (actions/webhook.py) sign by seed 004's scheme instead, unless their connection
asks for this one.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import Any

from billflow.connectors import http
from billflow.connectors.base import Connector, SendContext
from billflow.errors import ConfigurationError
from billflow.models.documents import DispatchResult, InvoiceDraft
from billflow.models.rules import DOCUMENT_ACTIONS
from billflow.netguard import check_static_url
from billflow.settings import get_settings
from billflow.signing import BILLFLOW_SIGNATURE_HEADER as SIGNATURE_HEADER
from billflow.signing import BILLFLOW_TIMESTAMP_HEADER as TIMESTAMP_HEADER
from billflow.signing import billflow_signature as signature
from billflow.storage.secrets import Connection

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "WebhookConnector", "check_url", "ports_restricted", "reply_id",
           "signature", "signed_headers"]

# Seed 004: "Zoho Books only supports port numbers 80 and 443". billflow holds its production stage to that.
ALLOWED_PORTS = frozenset({80, 443})
PRODUCTION_STAGES = frozenset({"prod", "production"})


def ports_restricted() -> bool:
    """Production always; any other stage when WEBHOOK_RESTRICT_PORTS is set (to rehearse production)."""
    if get_settings().stage.lower() in PRODUCTION_STAGES:
        return True
    return get_settings().webhook_restrict_ports


def check_url(url: str, target: str = "webhook") -> urllib.parse.SplitResult:
    """An absolute http(s) URL with a host, on port 80 or 443 where ports are restricted, that does not
    name an internal address (billflow.netguard)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{target}: {url!r} is not an absolute http:// or https:// URL")
    try:
        port = parts.port
    except ValueError:
        raise ConfigurationError(f"{target}: {url!r} has an invalid port") from None
    if port is not None and port not in ALLOWED_PORTS and ports_restricted():
        raise ConfigurationError(
            f"{target}: port {port} is refused in production; webhooks may only use ports 80 and 443 "
            f"(STAGE={get_settings().stage})"
        )
    check_static_url(url, target)  # a literal internal address or a local name; the rest at connect time
    return parts


def signed_headers(secret: str, body: bytes) -> dict[str, str]:
    """billflow's timestamped signature of a request body (billflow.signing): X-Billflow-Timestamp and
    X-Billflow-Signature."""
    timestamp = str(int(time.time()))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature(secret, timestamp, body)}


def reply_id(answer: http.HttpResponse) -> str | None:
    """The id a webhook's receiver answered with ({"id": ...} or {"external_id": ...}), if any."""
    try:
        reply = answer.json()
    except ValueError:
        return None
    found = (reply.get("id") or reply.get("external_id")) if isinstance(reply, dict) else None
    return str(found) if found is not None else None


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
        url = connection.require("url")
        check_url(url)
        return [{"method": "POST", "url": url, "json": payload}]

    def send_payload(
        self, payload: dict[str, Any], connection: Connection, context: SendContext
    ) -> DispatchResult:
        url = connection.require("url")
        check_url(url)
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": context.idempotency_key}
        secret = connection.settings.get("secret")
        if secret:
            headers.update(signed_headers(str(secret), body))
        answer = http.request("POST", url, headers=headers, body=body, target="webhook")
        return DispatchResult(
            external_id=reply_id(answer) or context.idempotency_key, details={"status": answer.status}
        )
