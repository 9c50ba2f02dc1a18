"""Sign webhook deliveries exactly as their senders do, for tests and the demo.

Written from the senders' code, not from billflow's verifier, so a test that signs here and verifies there
checks one against the other.

Twenty (packages/twenty-server/src/engine/metadata-modules/webhook/jobs/call-webhook.job.ts):
    headers['X-Twenty-Webhook-Timestamp'] = Date.now().toString()
    headers['X-Twenty-Webhook-Signature'] =
        createHmac('sha256', secret).update(`${timestamp}:${JSON.stringify(payload)}`).digest('hex')
    headers['X-Twenty-Webhook-Nonce'] = randomBytes(16).toString('hex')      (not signed)
and axios posts JSON.stringify(payload): the signed text and the body are the same bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

EVENTS_DIR = Path(__file__).resolve().parents[3] / "events"  # the repository's sample events


def twenty_body(payload: dict[str, Any]) -> bytes:
    """The bytes Twenty posts: JSON.stringify(payload), compact, non-ASCII left as UTF-8."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def twenty_headers(secret: str, body: bytes, timestamp_ms: int | None = None) -> dict[str, str]:
    """The headers of a Twenty delivery of `body` signed with `secret`, named as Twenty sends them."""
    timestamp = str(int(time.time() * 1000) if timestamp_ms is None else timestamp_ms)
    signature = hmac.new(secret.encode(), f"{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Twenty-Webhook-Timestamp": timestamp,
        "X-Twenty-Webhook-Signature": signature,
        "X-Twenty-Webhook-Nonce": secrets.token_hex(16),
    }


def twenty_event(name: str) -> dict[str, Any]:
    """A sample delivery from events/twenty/ (name with or without .json)."""
    path = EVENTS_DIR / "twenty" / (name if name.endswith(".json") else f"{name}.json")
    payload: dict[str, Any] = json.loads(path.read_text())
    return payload


def signed_twenty_delivery(
    secret: str, payload: dict[str, Any], timestamp_ms: int | None = None
) -> tuple[dict[str, str], bytes]:
    """(headers, body) of a delivery of `payload`, ready to POST or to hand to the ingest."""
    body = twenty_body(payload)
    return twenty_headers(secret, body, timestamp_ms), body


def post_stage_change(base_url: str, tenant: str, secret: str, deal: dict[str, Any], timeout: float = 30) -> int:
    """POST Twenty's signed `opportunity.updated` for a deal whose stage just changed; the HTTP status."""
    payload = {
        "eventName": "opportunity.updated", "objectMetadata": {"nameSingular": "opportunity"},
        "webhookId": "c2a9f1f4-9f3b-4b7e-a7c4-0d1b2e3f4a5b",
        "eventDate": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "record": deal, "updatedFields": ["stage"],
    }
    headers, body = signed_twenty_delivery(secret, payload)
    url = f"{base_url}/webhooks/{tenant}/twenty"  # the local runtime's own http:// URL
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
        return int(answer.status)
