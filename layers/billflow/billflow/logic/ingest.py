"""Webhook in, normalised events on the bus, 202 out: verify, validate, publish, nothing else."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from billflow.errors import NotFound, PayloadTooLarge, Unauthorized
from billflow.models.events import TENANT_ID, CrmEvent
from billflow.settings import get_settings
from billflow.sources import source_for
from billflow.storage import keys
from billflow.storage.bus import publish_events
from billflow.storage.secrets import get_secret_store


@dataclass(frozen=True)
class WebhookDelivery:
    tenant: str
    source: str
    method: str
    url: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes


def accept_webhook(delivery: WebhookDelivery, now: datetime | None = None) -> list[CrmEvent]:
    settings = get_settings()
    if len(delivery.body) > settings.max_body_bytes:
        raise PayloadTooLarge(f"body is {len(delivery.body)} bytes; the limit is {settings.max_body_bytes}")
    if not TENANT_ID.match(delivery.tenant):
        raise NotFound("unknown tenant")
    adapter = source_for(delivery.tenant, delivery.source)  # issue 11: generic sources by connection
    secret = get_secret_store().signing_secret(delivery.tenant, delivery.source)
    if secret is None:
        # Same answer for an unknown tenant and a missing secret: the URL reveals nothing.
        raise Unauthorized(f"no signing secret is configured for this tenant and source {delivery.source!r}")
    now = now or datetime.now(UTC)
    adapter.verify(
        secret=secret, method=delivery.method, url=delivery.url, headers=delivery.headers,
        body=delivery.body, now=now, tolerance_seconds=settings.signature_tolerance_seconds,
    )
    events = adapter.parse(tenant=delivery.tenant, body=delivery.body, received_at=now)
    for event in events:
        keys.check_record_key(event.tenant, event.source, event.object, event.record_id)
    publish_events(events)
    return events
