"""Any CRM that can POST JSON: a signature scheme chosen among the common ones, and a JSONata mapping from
its body to CrmEvent fields.

A generic source is configured by its own secret ({prefix}/{tenant}/source/{name}, beside its signing
secret), so one tenant can have several (`pipedrive`, `close`, ...), each with its own scheme and mapping;
the tenant's connection of the same name (type "generic", connectors/generic_crm.py) holds the CRM's API
calls for lookups, write-back, ask-the-CRM and the sweep. Ingest, facing the internet, reads only the
source's secret, never a connection's credentials. The source's document:

    signing_secret: ...

    webhook:
      scheme: hmac                  # hmac (default) | basic
      algorithm: sha256             # sha256 | sha1
      encoding: hex                 # hex | base64
      signature_header: X-Signature
      prefix: "sha256="             # optional, stripped before comparing (GitHub-style)
      message: "{body}"             # or "{timestamp}.{body}" (Stripe/Slack-style), any template of
                                    #   {body}, {timestamp}, {method}, {url}
      timestamp_header: X-Timestamp # required when the message uses {timestamp}; checked for freshness
      timestamp_unit: s             # s | ms
      tolerance_seconds: 300
    mapping: |                      # JSONata: the body -> one event or an array of events
      {"object": ..., "action": ..., "record_id": ..., "record": ..., "changed_fields": ..., ...}
    record_mapping: |               # optional JSONata: a CRM record -> the record rules and documents read
      $merge([$, {"name": title, "amount": {"amountMicros": $round(value * 1000000), "currencyCode": currency}}])
                                    # applied to webhook records and to records read from the API alike, so
                                    # both paths remember and compare the same shape

The secret is the document's signing_secret, as for every source; with scheme basic it is "user:password",
compared with the request's HTTP Basic credentials (Pipedrive's
webhooks authenticate this way: it signs nothing, and sends the http_auth_user/http_auth_password the
webhook was created with).

The mapping's output, per event: object, action (created|updated|deleted, or create|change|delete|added|
updated|deleted), record_id, record (an object); optionally changed_fields (names, or null when the CRM does
not say), occurred_at (ISO 8601 or Unix seconds/ms; default: received), event_id (default: a fingerprint
of the event, so a redelivery keeps its id).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from billflow.errors import ConfigurationError, InvalidRequest, Unauthorized
from billflow.mapping import MappingError, apply_mapping, mapping_problem
from billflow.models.events import CrmEvent, RecordAction

SCHEMES = ("hmac", "basic")
ALGORITHMS = {"sha256": hashlib.sha256, "sha1": hashlib.sha1}
ENCODINGS = ("hex", "base64")
MESSAGE_PARTS = frozenset({"body", "timestamp", "method", "url"})
DEFAULT_TOLERANCE_SECONDS = 300
MAX_EVENTS_PER_BODY = 100
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_MAX_TIMESTAMP_DIGITS = 15

_ACTIONS: dict[str, RecordAction] = {
    "created": "created", "create": "created", "added": "created", "creation": "created",
    "updated": "updated", "update": "updated", "change": "updated", "changed": "updated",
    "deleted": "deleted", "delete": "deleted", "removed": "deleted", "deletion": "deleted",
}
EVENT_FIELDS = frozenset({"object", "action", "record_id", "record", "changed_fields", "occurred_at", "event_id"})


def is_generic(document: Mapping[str, Any]) -> bool:
    """A source secret that configures a generic source (it has a mapping)."""
    return "mapping" in document


def config_problems(settings: Mapping[str, Any]) -> list[str]:
    """What is wrong with a generic source's webhook settings and mappings (empty: nothing). Called when the
    source is saved (the local runtime's connections file; the admin API's source secrets) and when its
    connection is tested, so a bad mapping is found before the first webhook."""
    problems: list[str] = []
    hook = settings.get("webhook") or {}
    if not isinstance(hook, Mapping):
        return ["webhook: an object (scheme, algorithm, encoding, signature_header, ...)"]
    scheme = hook.get("scheme", "hmac")
    if scheme not in SCHEMES:
        problems.append(f"webhook.scheme: {scheme!r} is not one of {', '.join(SCHEMES)}")
    if scheme == "hmac":
        if hook.get("algorithm", "sha256") not in ALGORITHMS:
            problems.append(f"webhook.algorithm: one of {', '.join(ALGORITHMS)}")
        if hook.get("encoding", "hex") not in ENCODINGS:
            problems.append(f"webhook.encoding: one of {', '.join(ENCODINGS)}")
        if not isinstance(hook.get("signature_header"), str) or not hook.get("signature_header"):
            problems.append("webhook.signature_header: the header that carries the signature (e.g. X-Signature)")
        message = hook.get("message", "{body}")
        parts = set(_PLACEHOLDER.findall(message)) if isinstance(message, str) else set()
        if not isinstance(message, str) or "body" not in parts or parts - MESSAGE_PARTS:
            problems.append("webhook.message: a template with {body} and optionally {timestamp}, {method}, {url}")
        elif "timestamp" in parts and not hook.get("timestamp_header"):
            problems.append("webhook.timestamp_header: needed, the message signs {timestamp}")
    if hook.get("timestamp_unit", "s") not in ("s", "ms"):
        problems.append("webhook.timestamp_unit: s or ms")
    tolerance = hook.get("tolerance_seconds", DEFAULT_TOLERANCE_SECONDS)
    if not isinstance(tolerance, int) or isinstance(tolerance, bool) or not 0 < tolerance <= 86_400:
        problems.append("webhook.tolerance_seconds: a whole number of seconds, 1 to 86400")
    mapping = settings.get("mapping")
    problem = mapping_problem(mapping)
    if problem:
        problems.append(f"mapping: {problem}")
    if settings.get("record_mapping") is not None:
        problem = mapping_problem(settings["record_mapping"])
        if problem:
            problems.append(f"record_mapping: {problem}")
    return problems


def map_record(settings: Mapping[str, Any], record: dict[str, Any], name: str) -> dict[str, Any]:
    """The connection's record_mapping over a CRM record (the record itself without one)."""
    text = settings.get("record_mapping")
    if text is None:
        return record
    mapped = apply_mapping(str(text), record, f"{name} record_mapping")
    if not isinstance(mapped, dict):
        raise MappingError(f"{name} record_mapping does not yield an object")
    return mapped


class GenericAdapter:
    """One generic source of one tenant: the connection's webhook settings and mapping."""

    def __init__(self, name: str, settings: Mapping[str, Any]) -> None:
        problems = config_problems(settings)
        if problems:
            raise ConfigurationError(f"generic source {name!r} is misconfigured: " + "; ".join(problems),
                                     problems=problems)
        self.name = name
        self._hook: Mapping[str, Any] = settings.get("webhook") or {}
        self._mapping: str = settings["mapping"]
        self._settings = settings

    # --- verify ----------------------------------------------------------------------------------
    def verify(
        self, *, secret: str, method: str, url: str, headers: Mapping[str, str], body: bytes,
        now: datetime, tolerance_seconds: int,
    ) -> None:
        hook = self._hook
        tolerance = int(hook.get("tolerance_seconds", tolerance_seconds))
        timestamp = None
        if hook.get("timestamp_header"):
            timestamp = _fresh_timestamp(headers, str(hook["timestamp_header"]), str(hook.get("timestamp_unit", "s")),
                                         now, tolerance)
        if hook.get("scheme", "hmac") == "basic":
            _check_basic(secret, headers.get("authorization", ""))
            return
        header = str(hook["signature_header"]).lower()
        given = headers.get(header, "").strip()
        if not given:
            raise Unauthorized(f"missing {hook['signature_header']} header")
        prefix = str(hook.get("prefix") or "")
        if prefix:
            if not given.lower().startswith(prefix.lower()):
                raise Unauthorized(f"{hook['signature_header']} does not start with {prefix!r}")
            given = given[len(prefix):]
        message = signed_message(str(hook.get("message", "{body}")), body, timestamp or "", method, url)
        expected = digest(secret, message, str(hook.get("algorithm", "sha256")))
        if not _digest_matches(expected, given, str(hook.get("encoding", "hex"))):
            raise Unauthorized("signature does not match the body")

    # --- parse -----------------------------------------------------------------------------------
    def parse(self, *, tenant: str, body: bytes, received_at: datetime) -> list[CrmEvent]:
        try:
            document = json.loads(body)
        except ValueError:
            raise InvalidRequest("body is not JSON") from None
        try:
            mapped = apply_mapping(self._mapping, document, f"source {self.name} mapping")
        except MappingError as exc:
            raise InvalidRequest(exc.message) from None
        items = mapped if isinstance(mapped, list) else [mapped]
        if mapped is None or not items:
            raise InvalidRequest(f"the {self.name} mapping yields no event for this body")
        if len(items) > MAX_EVENTS_PER_BODY:
            raise InvalidRequest(f"the {self.name} mapping yields {len(items)} events; at most {MAX_EVENTS_PER_BODY}")
        return [self._event(tenant, item, i, received_at) for i, item in enumerate(items)]

    def _event(self, tenant: str, item: Any, index: int, received_at: datetime) -> CrmEvent:
        where = f"{self.name} mapping, event {index + 1}"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where}: not an object")
        unknown = sorted(set(item) - EVENT_FIELDS)
        if unknown:
            raise InvalidRequest(f"{where}: unknown field(s) {', '.join(unknown)}",
                                 known=sorted(EVENT_FIELDS))
        if isinstance(item.get("record"), dict):
            try:
                item = {**item, "record": map_record(self._settings, item["record"], self.name)}
            except MappingError as exc:
                raise InvalidRequest(exc.message) from None
        return to_event(tenant, self.name, item, received_at, where)


def to_event(tenant: str, source: str, item: Mapping[str, Any], received_at: datetime, where: str) -> CrmEvent:
    """A mapped event as a CrmEvent; InvalidRequest naming the field that is wrong."""
    if item.get("action") in (None, ""):
        raise InvalidRequest(f"{where}: action is missing (the mapping found none in the body)")
    action = _ACTIONS.get(str(item.get("action", "")).lower())
    if action is None:
        raise InvalidRequest(f"{where}: action {item.get('action')!r} is not one of created, updated, deleted")
    object_name = item.get("object")
    if not isinstance(object_name, str) or not object_name:
        raise InvalidRequest(f"{where}: object is missing")
    record_id = item.get("record_id")
    if isinstance(record_id, int) and not isinstance(record_id, bool):
        record_id = str(record_id)  # Pipedrive and others number their records
    if not isinstance(record_id, str) or not record_id:
        raise InvalidRequest(f"{where}: record_id is missing")
    record = item.get("record")
    if not isinstance(record, dict):
        raise InvalidRequest(f"{where}: record is not an object")
    changed = item.get("changed_fields")
    if isinstance(changed, str):
        changed = [changed]  # JSONata's singleton sequence: one key is a string, not an array
    if changed is not None and not (isinstance(changed, list) and all(isinstance(f, str) for f in changed)):
        raise InvalidRequest(f"{where}: changed_fields is a list of field names or null")
    occurred = parse_time(item.get("occurred_at"), where) or received_at
    event_id = item.get("event_id")
    if event_id is not None and (not isinstance(event_id, (str, int)) or isinstance(event_id, bool)):
        raise InvalidRequest(f"{where}: event_id is text")
    fingerprint = json.dumps([tenant, source, object_name, action, record_id, occurred.isoformat(), record, changed],
                             sort_keys=True, separators=(",", ":"), default=str)
    return CrmEvent(
        event_id=f"{source}-{event_id}" if event_id not in (None, "") else
        f"{source}-" + hashlib.sha256(fingerprint.encode()).hexdigest()[:40],
        tenant=tenant, source=source, object=object_name, action=action, record_id=record_id,
        record={**record, "id": record.get("id", record_id)}, changed_fields=changed,
        occurred_at=occurred, received_at=received_at,
    )


def parse_time(value: Any, where: str) -> datetime | None:
    """ISO 8601 text or a Unix time in seconds or milliseconds (by its size); None when absent."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value / 1000 if value > 100_000_000_000 else value
        return datetime.fromtimestamp(seconds, UTC)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return parse_time(int(text), where)
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise InvalidRequest(f"{where}: occurred_at {value!r} is not a time (ISO 8601 or Unix seconds)")


def signed_message(template: str, body: bytes, timestamp: str, method: str, url: str) -> bytes:
    """The bytes the CRM signs: the template with the raw body (as bytes, never re-encoded) and the rest."""
    values = {"timestamp": timestamp.encode(), "method": method.upper().encode(), "url": url.encode()}
    out = bytearray()
    position = 0
    for match in _PLACEHOLDER.finditer(template):
        out += template[position:match.start()].encode()
        out += body if match.group(1) == "body" else values[match.group(1)]
        position = match.end()
    out += template[position:].encode()
    return bytes(out)


def digest(secret: str, message: bytes, algorithm: str) -> bytes:
    return hmac.new(secret.encode(), message, ALGORITHMS[algorithm]).digest()


def _digest_matches(expected: bytes, given: str, encoding: str) -> bool:
    try:
        raw = bytes.fromhex(given) if encoding == "hex" else base64.b64decode(given.encode("ascii"), validate=True)
    except (ValueError, binascii.Error, UnicodeEncodeError):
        return False
    return hmac.compare_digest(expected, raw)


def _fresh_timestamp(headers: Mapping[str, str], header: str, unit: str, now: datetime, tolerance: int) -> str:
    value = headers.get(header.lower(), "").strip()
    if not value:
        raise Unauthorized(f"missing {header} header")
    if not (value.isascii() and value.isdigit()) or len(value) > _MAX_TIMESTAMP_DIGITS:
        raise Unauthorized(f"{header} is not a Unix time in {'milliseconds' if unit == 'ms' else 'seconds'}")
    sent_at = int(value) / (1000 if unit == "ms" else 1)
    if abs(now.timestamp() - sent_at) > tolerance:
        raise Unauthorized(f"stale signature: timestamp is more than {tolerance}s from now")
    return value


def _check_basic(secret: str, authorization: str) -> None:
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise Unauthorized("missing HTTP Basic credentials (Authorization: Basic ...)")
    try:
        given = base64.b64decode(encoded.strip().encode("ascii"), validate=True)
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise Unauthorized("Authorization: Basic credentials are not base64") from None
    if not hmac.compare_digest(hashlib.sha256(given).digest(), hashlib.sha256(secret.encode()).digest()):
        raise Unauthorized("HTTP Basic credentials do not match")


class UnconfiguredGeneric:
    """The source named "generic" itself, before a connection configures it: refuses with what to do."""

    name = "generic"

    def verify(self, **_: Any) -> None:
        raise ConfigurationError("source 'generic' has no mapping: give its source secret a webhook scheme and "
                                 "a mapping (docs/sources/generic.md)")

    def parse(self, **_: Any) -> list[CrmEvent]:
        raise InvalidRequest("source 'generic' has no mapping: give its source secret a webhook scheme and a "
                             "mapping (docs/sources/generic.md)")


ADAPTER = UnconfiguredGeneric()
