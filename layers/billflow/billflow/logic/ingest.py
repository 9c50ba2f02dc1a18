"""Webhook in, normalised events on the bus, 202 out: verify, validate, publish, nothing else."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from billflow.errors import NotFound, PayloadTooLarge, Unauthorized
from billflow.models.events import TENANT_ID, CrmEvent
from billflow.settings import get_settings
from billflow.sources import BatchSource, ConfigurableSource, ParsedBatch, source_for
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
    return accept_delivery(delivery, now).events


def accept_delivery(delivery: WebhookDelivery, now: datetime | None = None) -> ParsedBatch:
    """Verify, parse and publish one delivery. A batch source's events are judged one by one: the valid ones
    are published, the others come back in `skipped` with their reason (the caller logs them and still
    answers 2xx, so the CRM does not resend the valid ones); a body that is no batch at all raises."""
    settings = get_settings()
    if len(delivery.body) > settings.max_body_bytes:
        raise PayloadTooLarge(f"body is {len(delivery.body)} bytes; the limit is {settings.max_body_bytes}")
    if not TENANT_ID.match(delivery.tenant):
        raise NotFound("unknown tenant")
    source_settings = get_secret_store().source_settings(delivery.tenant, delivery.source) or {}
    # a built-in CRM by its name, else a generic source configured by that same document (issue 11)
    adapter = source_for(delivery.tenant, delivery.source, source_settings)
    secret = source_settings.get("signing_secret")
    if not isinstance(secret, str) or not secret:
        # Same answer for an unknown tenant and a missing secret: the URL reveals nothing.
        raise Unauthorized(f"no signing secret is configured for this tenant and source {delivery.source!r}")
    if isinstance(adapter, ConfigurableSource):
        adapter = adapter.configured(source_settings)
    now = now or datetime.now(UTC)
    adapter.verify(
        secret=secret, method=delivery.method, url=delivery.url, headers=delivery.headers,
        body=delivery.body, now=now, tolerance_seconds=settings.signature_tolerance_seconds,
    )
    if isinstance(adapter, BatchSource):
        batch = adapter.parse_batch(tenant=delivery.tenant, body=delivery.body, received_at=now)
    else:
        events = adapter.parse(tenant=delivery.tenant, body=delivery.body, received_at=now)
        for event in events:
            keys.check_record_key(event.tenant, event.source, event.object, event.record_id)
        batch = ParsedBatch(events=events)
    if batch.events:
        publish_events(batch.events)
    return batch
