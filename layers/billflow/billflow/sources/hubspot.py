"""HubSpot app webhooks (the Webhooks API of a public or private app).

Signature v3, as HubSpot documents it ("Validating requests"): X-HubSpot-Signature-v3 is the base64 HMAC-SHA256,
keyed with the app's client secret, of method + URI + raw body + X-HubSpot-Request-Timestamp (milliseconds),
where the URI is the full URL HubSpot called with the percent-escapes of its table decoded (%3A -> ":" ...).
A request whose timestamp is more than 5 minutes old is refused. v1 (sha256 hex of secret + body) and v2
(sha256 hex of secret + method + URI + body), which carry no timestamp and so can be replayed, are refused
unless the source's settings list them in `signature_versions`.

The body is a JSON array of up to 100 events {eventId, subscriptionId, portalId, appId, occurredAt,
subscriptionType, attemptNumber, objectId, propertyName?, propertyValue?, changeSource, objectTypeId?}: one
property's new value per event, never the record. Each event is normalised on its own: `deal.propertyChange`
becomes an update of the deal that announces that one field (billflow's record state decides the
transition), `deal.creation` a created deal, `deal.deletion` a deleted one; `object.*` events name the
object by objectTypeId (quotes 0-14, commerce payments 0-101...). Duplicates (same portal and eventId) are
kept once. An event billflow cannot use is skipped with its reason, never the whole batch: HubSpot resends a
batch answered 4xx or 5xx up to 10 times over 24 hours.

Source settings (next to signing_secret, in the source's secret): signature_versions (default [v3]),
webhook_url (the exact target URL configured in the app, when a proxy or custom domain makes the URL
billflow sees differ), portal_ids (only these portals' events are accepted).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from billflow.errors import InvalidRequest, Unauthorized
from billflow.models.events import CrmEvent, RecordAction
from billflow.models.hubspot import BY_NAME, hubspot_object, normalise_record
from billflow.sources import ParsedBatch, SkippedEvent
from billflow.storage import keys

SIGNATURE_V3_HEADER = "x-hubspot-signature-v3"
TIMESTAMP_HEADER = "x-hubspot-request-timestamp"
SIGNATURE_HEADER = "x-hubspot-signature"  # v1 and v2
VERSION_HEADER = "x-hubspot-signature-version"
MAX_AGE_SECONDS = 300  # HubSpot: reject requests whose timestamp is older than 5 minutes
MAX_EVENTS = 100  # HubSpot sends at most 100 events per request
_MAX_TIMESTAMP_DIGITS = 15
SIGNATURE_VERSIONS = ("v1", "v2", "v3")

# The escapes HubSpot's documentation lists: decoded in the URI before it is signed (as listed, upper case).
_DECODED = {"%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$", "%27": "'", "%28": "(",
            "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";"}
_ESCAPE = re.compile("|".join(re.escape(k) for k in _DECODED))

_ACTIONS: dict[str, RecordAction] = {"creation": "created", "propertyChange": "updated", "deletion": "deleted"}


def signed_uri(url: str) -> str:
    """The URI as HubSpot signs it: the listed percent-escapes decoded, nothing else changed."""
    return _ESCAPE.sub(lambda m: _DECODED[m.group(0)], url)


def sign_v3(secret: str, method: str, url: str, body: bytes, timestamp: str) -> str:
    message = method.encode() + signed_uri(url).encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def sign_v1(secret: str, body: bytes) -> str:
    return hashlib.sha256(secret.encode() + body).hexdigest()


def sign_v2(secret: str, method: str, url: str, body: bytes) -> str:
    return hashlib.sha256(secret.encode() + method.encode() + url.encode() + body).hexdigest()


@dataclass(frozen=True)
class HubSpotSettings:
    signature_versions: tuple[str, ...] = ("v3",)
    webhook_url: str | None = None
    portal_ids: frozenset[str] | None = None

    @classmethod
    def parse(cls, settings: Mapping[str, Any]) -> HubSpotSettings:
        versions = settings.get("signature_versions") or ["v3"]
        if isinstance(versions, str):
            versions = [versions]
        unknown = [v for v in versions if v not in SIGNATURE_VERSIONS]
        if unknown:
            # A typo must not silently narrow or widen what is accepted: refuse every delivery, say why.
            raise Unauthorized(f"hubspot source: signature_versions has {unknown}; use some of v3, v2, v1")
        portals = settings.get("portal_ids")
        url = settings.get("webhook_url")
        return cls(
            signature_versions=tuple(str(v) for v in versions),
            webhook_url=str(url) if url else None,
            portal_ids=frozenset(str(p) for p in portals) if portals else None,
        )


class HubSpotAdapter:
    name = "hubspot"

    def __init__(self, settings: HubSpotSettings | None = None) -> None:
        self.settings = settings or HubSpotSettings()

    def configured(self, settings: Mapping[str, Any]) -> HubSpotAdapter:
        return HubSpotAdapter(HubSpotSettings.parse(settings))

    # --- signature ---------------------------------------------------------------------------------
    def verify(
        self, *, secret: str, method: str, url: str, headers: Mapping[str, str], body: bytes,
        now: datetime, tolerance_seconds: int,
    ) -> None:
        uri = self.settings.webhook_url or url
        if headers.get(SIGNATURE_V3_HEADER):
            if "v3" not in self.settings.signature_versions:
                raise Unauthorized("HubSpot signature v3 is not among this source's signature_versions")
            self._verify_v3(secret, method, uri, headers, body, now, min(tolerance_seconds, MAX_AGE_SECONDS))
            return
        version = (headers.get(VERSION_HEADER) or "").strip().lower()
        signature = headers.get(SIGNATURE_HEADER)
        if not signature or version not in ("v1", "v2"):
            raise Unauthorized("missing X-HubSpot-Signature-v3 and X-HubSpot-Request-Timestamp headers")
        if version not in self.settings.signature_versions:
            raise Unauthorized(
                f"HubSpot signature {version} is refused: it has no timestamp, so a captured request can be "
                f"replayed; send X-HubSpot-Signature-v3, or list {version} in the source's signature_versions")
        expected = sign_v1(secret, body) if version == "v1" else sign_v2(secret, method, uri, body)
        if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode("utf-8", "replace")):
            raise Unauthorized(f"signature ({version}) does not match the request")

    @staticmethod
    def _verify_v3(
        secret: str, method: str, uri: str, headers: Mapping[str, str], body: bytes, now: datetime,
        max_age: int,
    ) -> None:
        timestamp = headers.get(TIMESTAMP_HEADER)
        if not timestamp:
            raise Unauthorized("missing X-HubSpot-Request-Timestamp header")
        if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > _MAX_TIMESTAMP_DIGITS:
            raise Unauthorized("X-HubSpot-Request-Timestamp is not a number of milliseconds")
        age = now.timestamp() - int(timestamp) / 1000
        if age > max_age:
            raise Unauthorized(f"stale signature: the request is more than {max_age}s old")
        if age < -max_age:
            raise Unauthorized(f"X-HubSpot-Request-Timestamp is more than {max_age}s in the future")
        expected = sign_v3(secret, method.upper(), uri, body, timestamp).encode()
        given = headers.get(SIGNATURE_V3_HEADER, "").strip().encode("utf-8", "replace")
        if not hmac.compare_digest(expected, given):
            raise Unauthorized("signature (v3) does not match the request")

    # --- body --------------------------------------------------------------------------------------
    def parse(self, *, tenant: str, body: bytes, received_at: datetime) -> list[CrmEvent]:
        batch = self.parse_batch(tenant=tenant, body=body, received_at=received_at)
        if not batch.events and batch.skipped:
            raise InvalidRequest("no event of the HubSpot batch can be used",
                                 problems=[f"event {s.index}: {s.reason}" for s in batch.skipped[:10]])
        return batch.events

    def parse_batch(self, *, tenant: str, body: bytes, received_at: datetime) -> ParsedBatch:
        try:
            doc = json.loads(body)
        except ValueError:
            raise InvalidRequest("body is not JSON; HubSpot sends a JSON array of events") from None
        if not isinstance(doc, list):
            raise InvalidRequest("body is not a HubSpot webhook batch: expected a JSON array of events")
        if len(doc) > MAX_EVENTS:
            raise InvalidRequest(f"HubSpot sends at most {MAX_EVENTS} events per request; this body has {len(doc)}")
        batch = ParsedBatch(events=[])
        seen: set[str] = set()
        for index, raw in enumerate(doc):
            try:
                event = self._event(tenant, raw, received_at)
            except InvalidRequest as exc:
                event_id = raw.get("eventId") if isinstance(raw, dict) else None
                batch.skipped.append(SkippedEvent(index, exc.message, None if event_id is None else str(event_id)))
                continue
            if event.event_id in seen:
                continue  # the same event twice in one delivery: one is enough
            seen.add(event.event_id)
            batch.events.append(event)
        return batch

    def _event(self, tenant: str, raw: Any, received_at: datetime) -> CrmEvent:
        if not isinstance(raw, dict):
            raise InvalidRequest("not an event object")
        event_id, portal_id, object_id = (_id(raw, k) for k in ("eventId", "portalId", "objectId"))
        if self.settings.portal_ids is not None and portal_id not in self.settings.portal_ids:
            raise InvalidRequest(f"portal {portal_id} is not one this source serves (portal_ids)")
        subscription = raw.get("subscriptionType")
        if not isinstance(subscription, str) or "." not in subscription:
            raise InvalidRequest("subscriptionType is missing or not <object>.<change>")
        prefix, _, change = subscription.partition(".")
        action = _ACTIONS.get(change)
        if action is None:
            raise InvalidRequest(f"subscriptionType {subscription!r} is not a creation, propertyChange or deletion")
        if prefix == "object":
            type_id = raw.get("objectTypeId")
            found = hubspot_object(str(type_id)) if type_id else None
            if found is None:
                raise InvalidRequest(f"objectTypeId {type_id!r} is not an object billflow reads")
        else:
            found = BY_NAME.get(prefix)
            if found is None:
                raise InvalidRequest(f"subscriptionType {subscription!r} names no object billflow reads")
        occurred_ms = raw.get("occurredAt")
        if not isinstance(occurred_ms, int) or isinstance(occurred_ms, bool) or occurred_ms <= 0:
            raise InvalidRequest("occurredAt is not a time in milliseconds")
        properties: dict[str, Any] = {}
        changed: list[str] | None = None
        if action == "updated":
            name = raw.get("propertyName")
            if not isinstance(name, str) or not name:
                raise InvalidRequest("a propertyChange event without propertyName")
            value = raw.get("propertyValue")
            if value is not None and not isinstance(value, str | int | float | bool):
                raise InvalidRequest("propertyValue is not a value")
            properties[name] = value
            # The derived keys (amount, name, address) change with the property they come from.
            changed = sorted({name, *(set(normalise_record(found.name, object_id, properties))
                                      - {"id", "hs_object_id", name})})
        try:
            keys.check_record_key(tenant, self.name, found.name, object_id)
        except InvalidRequest as exc:
            raise InvalidRequest(exc.message) from None
        return CrmEvent(
            event_id=f"hubspot-{portal_id}-{event_id}",
            tenant=tenant,
            source=self.name,
            object=found.name,
            action=action,
            record_id=object_id,
            record=normalise_record(found.name, object_id, properties),
            changed_fields=changed,
            occurred_at=datetime.fromtimestamp(occurred_ms / 1000, UTC),
            received_at=received_at,
        )


def _id(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int | str) or str(value).strip() == "":
        raise InvalidRequest(f"{key} is missing or not an id")
    text = str(value).strip()
    if len(text) > 64 or not text.replace("-", "").isalnum():
        raise InvalidRequest(f"{key} is not an id")
    return text


ADAPTER = HubSpotAdapter()
