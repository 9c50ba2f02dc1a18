"""Twenty CRM webhooks.

Twenty signs with hex HMAC-SHA256(secret, f"{timestamp}:{raw body}") in X-Twenty-Webhook-Signature, the
timestamp (milliseconds) in X-Twenty-Webhook-Timestamp. The body carries the record after the change (for
a destroyed record, the record before it) and the names of the changed fields; no before-state
(transform-event-to-webhook-event.ts). Any object's events are taken: opportunity, company, person and
custom objects, created / updated / deleted / destroyed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from billflow.errors import InvalidRequest, Unauthorized
from billflow.models.events import CrmEvent, RecordAction

SIGNATURE_HEADER = "x-twenty-webhook-signature"
TIMESTAMP_HEADER = "x-twenty-webhook-timestamp"
_MAX_TIMESTAMP_DIGITS = 15

_ACTIONS: dict[str, RecordAction] = {
    "created": "created",
    "updated": "updated",
    "deleted": "deleted",
    "destroyed": "deleted",
}


class _ObjectMetadata(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str | None = None
    nameSingular: str


class TwentyWebhook(BaseModel):
    """The body Twenty's call-webhook job posts."""

    model_config = ConfigDict(extra="allow")

    eventName: str
    objectMetadata: _ObjectMetadata
    workspaceId: str | None = None
    webhookId: str | None = None
    eventDate: datetime
    record: dict[str, Any]
    updatedFields: list[str] | None = None


def sign(secret: str, timestamp_ms: str, body: bytes) -> str:
    message = timestamp_ms.encode() + b":" + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


class TwentyAdapter:
    name = "twenty"

    def verify(
        self, *, secret: str, method: str, url: str, headers: Mapping[str, str], body: bytes,
        now: datetime, tolerance_seconds: int,
    ) -> None:
        signature = headers.get(SIGNATURE_HEADER)
        timestamp = headers.get(TIMESTAMP_HEADER)
        if not signature or not timestamp:
            raise Unauthorized("missing X-Twenty-Webhook-Signature or X-Twenty-Webhook-Timestamp header")
        # Milliseconds since 1970 have 13 digits until the year 2286: a longer number is no timestamp (and
        # one of hundreds of digits would overflow the float conversion below).
        if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > _MAX_TIMESTAMP_DIGITS:
            raise Unauthorized("X-Twenty-Webhook-Timestamp is not a number of milliseconds")
        sent_at = int(timestamp) / 1000
        if abs(now.timestamp() - sent_at) > tolerance_seconds:
            raise Unauthorized(f"stale signature: timestamp is more than {tolerance_seconds}s from now")
        # Bytes on both sides: compare_digest refuses non-ASCII str, which must be a 401, not a 500.
        expected = sign(secret, timestamp, body).encode()
        if not hmac.compare_digest(expected, signature.strip().lower().encode("utf-8", "replace")):
            raise Unauthorized("signature does not match the body")

    def parse(self, *, tenant: str, body: bytes, received_at: datetime) -> list[CrmEvent]:
        try:
            hook = TwentyWebhook.model_validate_json(body)
        except ValidationError as exc:
            raise InvalidRequest("body is not a Twenty webhook event", problems=_problems(exc)) from None
        object_name, _, verb = hook.eventName.partition(".")
        action = _ACTIONS.get(verb)
        if action is None:
            raise InvalidRequest(f"unsupported Twenty event {hook.eventName!r}")
        record_id = hook.record.get("id")
        if not isinstance(record_id, str) or not record_id:
            raise InvalidRequest("record.id is missing")
        occurred = hook.eventDate if hook.eventDate.tzinfo else hook.eventDate.replace(tzinfo=UTC)
        return [
            CrmEvent(
                event_id=_fingerprint(tenant, hook),
                tenant=tenant,
                source=self.name,
                object=hook.objectMetadata.nameSingular or object_name,
                action=action,
                record_id=record_id,
                record=hook.record,
                changed_fields=hook.updatedFields,
                occurred_at=occurred,
                received_at=received_at,
            )
        ]


def _fingerprint(tenant: str, hook: TwentyWebhook) -> str:
    """Same change, same id, however often or however signed it is delivered."""
    canonical = json.dumps(
        [tenant, hook.eventName, hook.webhookId, hook.eventDate.isoformat(), hook.record, hook.updatedFields],
        sort_keys=True, separators=(",", ":"), default=str,
    )
    return "twenty-" + hashlib.sha256(canonical.encode()).hexdigest()[:40]


def _problems(exc: ValidationError) -> list[str]:
    return [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()][:10]


ADAPTER = TwentyAdapter()
