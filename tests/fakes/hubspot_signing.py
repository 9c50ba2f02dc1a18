"""Sign HubSpot webhook deliveries as HubSpot documents it, independently of billflow's verifier.

From "Validating requests from HubSpot" (developers.hubspot.com, request validation, v3):
    source string = requestMethod + requestUri + requestBody + timestamp   (UTF-8)
    X-HubSpot-Signature-v3 = base64(HMAC-SHA256(client secret, source string))
    X-HubSpot-Request-Timestamp = milliseconds since the epoch
where the URL-encoded characters of HubSpot's table are decoded in requestUri first. v1 and v2 (hex SHA-256 of
secret + body, and of secret + method + URI + body) come with X-HubSpot-Signature-Version.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

# HubSpot's table, copied from its documentation (not from billflow).
DOCUMENTED_DECODING = [("%3A", ":"), ("%2F", "/"), ("%3F", "?"), ("%40", "@"), ("%21", "!"), ("%24", "$"),
                       ("%27", "'"), ("%28", "("), ("%29", ")"), ("%2A", "*"), ("%2C", ","), ("%3B", ";")]


def hubspot_body(events: list[dict[str, Any]]) -> bytes:
    return json.dumps(events, separators=(",", ":")).encode()


def v3_headers(secret: str, method: str, uri: str, body: bytes, timestamp_ms: int | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() * 1000) if timestamp_ms is None else timestamp_ms)
    decoded = uri
    for escape, char in DOCUMENTED_DECODING:
        decoded = decoded.replace(escape, char)
    source = (method + decoded).encode("utf-8") + body + timestamp.encode("utf-8")
    digest = hmac.new(secret.encode("utf-8"), source, hashlib.sha256).digest()
    return {"Content-Type": "application/json", "X-HubSpot-Signature-v3": base64.b64encode(digest).decode(),
            "X-HubSpot-Request-Timestamp": timestamp}


def v1_headers(secret: str, body: bytes) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-HubSpot-Signature-Version": "v1",
            "X-HubSpot-Signature": hashlib.sha256(secret.encode() + body).hexdigest()}


def v2_headers(secret: str, method: str, uri: str, body: bytes) -> dict[str, str]:
    digest = hashlib.sha256(secret.encode() + method.encode() + uri.encode() + body).hexdigest()
    return {"Content-Type": "application/json", "X-HubSpot-Signature-Version": "v2", "X-HubSpot-Signature": digest}


def property_change(object_id: int, name: str, value: str, *, event_id: int, occurred_at: int,
                    subscription: str = "deal.propertyChange", portal_id: int = 62515, **extra: Any) -> dict[str, Any]:
    """One event as HubSpot's Webhooks API sends it."""
    return {"eventId": event_id, "subscriptionId": 4242, "portalId": portal_id, "appId": 1160452,
            "occurredAt": occurred_at, "subscriptionType": subscription, "attemptNumber": 0,
            "objectId": object_id, "propertyName": name, "propertyValue": value, "changeSource": "CRM",
            "sourceId": "userId:1234567", **extra}


def creation(object_id: int, *, event_id: int, occurred_at: int, subscription: str = "deal.creation",
             portal_id: int = 62515, **extra: Any) -> dict[str, Any]:
    return {"eventId": event_id, "subscriptionId": 4243, "portalId": portal_id, "appId": 1160452,
            "occurredAt": occurred_at, "subscriptionType": subscription, "attemptNumber": 0,
            "objectId": object_id, "changeFlag": "CREATED", "changeSource": "CRM", **extra}
