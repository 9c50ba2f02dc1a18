"""billflow.sources.twenty: Twenty's webhook signature, and its bodies turned into CrmEvents."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from billflow.errors import InvalidRequest, Unauthorized
from billflow.sources import get_source
from billflow.sources.twenty import ADAPTER
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes.signing import EVENTS_DIR, signed_twenty_delivery, twenty_body, twenty_event, twenty_headers

SECRET = "5f1c0e8a9b7d4c2e8f6a3b1d0c9e7f5a"
TENANT = "demo"
TOLERANCE = 300
# 2026-03-18T14:22:05.417Z, the eventDate of opportunity-won.json, in milliseconds.
SENT_MS = 1_773_843_725_417
SENT_AT = datetime(2026, 3, 18, 14, 22, 5, 417_000, tzinfo=UTC)
SAMPLES = sorted(p.name for p in (EVENTS_DIR / "twenty").glob("*.json"))


def lower(headers: dict[str, str]) -> dict[str, str]:
    """What the ingest hands an adapter: header names lower-cased (logic/ingest.WebhookDelivery)."""
    return {k.lower(): v for k, v in headers.items()}


def verify(headers: dict[str, str], body: bytes, now: datetime = SENT_AT, secret: str = SECRET) -> None:
    ADAPTER.verify(
        secret=secret, method="POST", url="https://hooks.example.com/webhooks/demo/twenty",
        headers=lower(headers), body=body, now=now, tolerance_seconds=TOLERANCE,
    )


def received(payload: dict[str, Any], *, tenant: str = TENANT, timestamp_ms: int = SENT_MS) -> list[Any]:
    """A signed delivery of payload, verified and parsed as the ingest does."""
    headers, body = signed_twenty_delivery(SECRET, payload, timestamp_ms)
    now = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    verify(headers, body, now=now)
    return ADAPTER.parse(tenant=tenant, body=body, received_at=now)


@pytest.fixture
def won() -> dict[str, Any]:
    return twenty_event("opportunity-won")


# --- signature -----------------------------------------------------------------------------------
def test_the_registry_serves_this_adapter() -> None:
    assert get_source("twenty") is ADAPTER


def test_a_signature_computed_by_twentys_own_code_verifies(won: dict[str, Any]) -> None:
    # Computed with Node 20 exactly as call-webhook.job.ts does:
    #   createHmac('sha256', secret).update(`${timestamp}:${JSON.stringify(payload)}`).digest('hex')
    node_body_sha256 = "d6c4846c3aaa9ce20f6af3230a381c56eabb42caef804adecdeb054720ba1b97"
    node_signature = "d0ad52a46704def93645cf0e4bb52e2d9263f501a4b77bd930f284075df87825"
    body = twenty_body(won)
    assert hashlib.sha256(body).hexdigest() == node_body_sha256  # our bytes are JSON.stringify's bytes
    headers = {"X-Twenty-Webhook-Timestamp": str(SENT_MS), "X-Twenty-Webhook-Signature": node_signature}
    verify(headers, body)
    assert twenty_headers(SECRET, body, SENT_MS)["X-Twenty-Webhook-Signature"] == node_signature


@pytest.mark.parametrize("sample", SAMPLES)
def test_every_sample_delivery_verifies_and_parses(sample: str) -> None:
    events = received(twenty_event(sample))
    assert len(events) == 1
    assert events[0].source == "twenty"


def test_the_pretty_printed_file_verifies_too_when_signed_as_sent() -> None:
    # The signature covers the raw bytes, whatever their layout: sign what is posted, verify what arrives.
    raw = (EVENTS_DIR / "twenty" / "opportunity-won.json").read_bytes()
    verify(twenty_headers(SECRET, raw, SENT_MS), raw)


def test_an_upper_case_hex_signature_is_accepted(won: dict[str, Any]) -> None:
    headers, body = signed_twenty_delivery(SECRET, won, SENT_MS)
    headers["X-Twenty-Webhook-Signature"] = headers["X-Twenty-Webhook-Signature"].upper()
    verify(headers, body)


@pytest.mark.parametrize("missing", ["X-Twenty-Webhook-Signature", "X-Twenty-Webhook-Timestamp"])
def test_a_missing_header_is_unauthorized(won: dict[str, Any], missing: str) -> None:
    headers, body = signed_twenty_delivery(SECRET, won, SENT_MS)
    del headers[missing]
    with pytest.raises(Unauthorized, match="missing"):
        verify(headers, body)


def test_an_unsigned_delivery_is_unauthorized(won: dict[str, Any]) -> None:
    # A Twenty webhook without a secret sends neither header: billflow requires one.
    with pytest.raises(Unauthorized):
        verify({"Content-Type": "application/json"}, twenty_body(won))


def test_a_signature_with_another_secret_is_unauthorized(won: dict[str, Any]) -> None:
    headers, body = signed_twenty_delivery("another-workspace-secret", won, SENT_MS)
    with pytest.raises(Unauthorized, match="does not match"):
        verify(headers, body)


def test_a_tampered_body_is_unauthorized(won: dict[str, Any]) -> None:
    headers, body = signed_twenty_delivery(SECRET, won, SENT_MS)
    tampered = body.replace(b'"amountMicros":12500000000', b'"amountMicros":99500000000')
    assert tampered != body
    with pytest.raises(Unauthorized, match="does not match"):
        verify(headers, tampered)


def test_a_replayed_signature_with_a_fresh_timestamp_is_unauthorized(won: dict[str, Any]) -> None:
    # The timestamp is signed: moving it forward to pass the freshness check breaks the signature.
    headers, body = signed_twenty_delivery(SECRET, won, SENT_MS)
    later = SENT_MS + 3_600_000
    headers["X-Twenty-Webhook-Timestamp"] = str(later)
    with pytest.raises(Unauthorized, match="does not match"):
        verify(headers, body, now=datetime.fromtimestamp(later / 1000, UTC))


@pytest.mark.parametrize("timestamp", ["", "soon", "1773843725.417", "2026-03-18T14:22:05Z", "9" * 330, "1" + "0" * 20])
def test_a_timestamp_that_is_not_milliseconds_is_unauthorized(won: dict[str, Any], timestamp: str) -> None:
    body = twenty_body(won)
    headers = twenty_headers(SECRET, body, SENT_MS)
    headers["X-Twenty-Webhook-Timestamp"] = timestamp
    with pytest.raises(Unauthorized):
        verify(headers, body)


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [
        (timedelta(seconds=TOLERANCE), True),  # exactly at the tolerance: still fresh
        (timedelta(seconds=TOLERANCE, milliseconds=1), False),  # one millisecond more: stale
        (-timedelta(seconds=TOLERANCE), True),  # a sender clock ahead of ours, within tolerance
        (-timedelta(seconds=TOLERANCE, milliseconds=1), False),
        (timedelta(days=1), False),  # a day-old delivery replayed
    ],
)
def test_the_freshness_tolerance_boundary(won: dict[str, Any], offset: timedelta, accepted: bool) -> None:
    headers, body = signed_twenty_delivery(SECRET, won, SENT_MS)
    if accepted:
        verify(headers, body, now=SENT_AT + offset)
    else:
        with pytest.raises(Unauthorized, match="stale"):
            verify(headers, body, now=SENT_AT + offset)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_tampering_of_the_body_bytes_fails_verification(data: st.DataObject) -> None:
    headers, body = signed_twenty_delivery(SECRET, twenty_event("opportunity-won"), SENT_MS)
    kind = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate", "append"]))
    at = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    if kind == "flip":
        mask = data.draw(st.integers(min_value=1, max_value=255))
        tampered = body[:at] + bytes([body[at] ^ mask]) + body[at + 1:]
    elif kind == "insert":
        tampered = body[:at] + data.draw(st.binary(min_size=1, max_size=8)) + body[at:]
    elif kind == "delete":
        tampered = body[:at] + body[at + 1:]
    elif kind == "truncate":
        tampered = body[:at]
    else:
        tampered = body + data.draw(st.binary(min_size=1, max_size=8))
    assert tampered != body
    with pytest.raises(Unauthorized):
        verify(headers, tampered)


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=2_000), secret=st.text(min_size=1, max_size=64))
def test_whatever_the_body_and_secret_a_twenty_signature_verifies(body: bytes, secret: str) -> None:
    verify(twenty_headers(secret, body, SENT_MS), body, secret=secret)


# --- parsing -------------------------------------------------------------------------------------
def test_an_update_becomes_one_normalised_event(won: dict[str, Any]) -> None:
    received_at = SENT_AT + timedelta(milliseconds=80)
    (event,) = ADAPTER.parse(tenant=TENANT, body=twenty_body(won), received_at=received_at)
    assert event.tenant == TENANT
    assert event.source == "twenty"
    assert event.object == "opportunity"
    assert event.action == "updated"
    assert event.record_id == "bde53504-c80c-4c1b-ba92-7bd1c914fb22"
    assert event.record == won["record"]
    assert event.record["amount"] == {"amountMicros": 12_500_000_000, "currencyCode": "USD"}
    assert event.changed_fields == ["stage"]
    assert event.occurred_at == SENT_AT
    assert event.occurred_at.tzinfo is not None
    assert event.received_at == received_at
    assert event.event_id.startswith("twenty-")


def test_a_creation_has_no_changed_fields() -> None:
    created = twenty_event("opportunity-created")
    assert "updatedFields" not in created  # Twenty sends none on *.created
    (event,) = received(created)
    assert event.action == "created"
    assert event.record_id == "8850e910-7d2f-4b0e-ab19-37e2004f16ee"
    assert event.changed_fields is None
    assert event.record["stage"] == "NEW"


@pytest.mark.parametrize("verb", ["deleted", "destroyed"])
def test_deletions_are_normalised_to_deleted(won: dict[str, Any], verb: str) -> None:
    won["eventName"] = f"opportunity.{verb}"
    (event,) = received(won)
    assert event.action == "deleted"


def test_a_custom_won_stage_is_carried_as_is() -> None:
    (event,) = received(twenty_event("opportunity-won-custom-stage"))
    assert event.record["stage"] == "CLOSED_WON"  # what "won" means is the rule's business, not the adapter's


@pytest.mark.parametrize("body", [b"", b"{", b'{"eventName": "opportunity.updated",', b"\xff\xfe\x00", b"null"])
def test_a_body_that_is_not_json_is_an_invalid_request(body: bytes) -> None:
    with pytest.raises(InvalidRequest) as caught:
        ADAPTER.parse(tenant=TENANT, body=body, received_at=SENT_AT)
    assert "not a Twenty webhook event" in caught.value.message
    assert caught.value.details["problems"]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda e: e.pop("eventName"), "eventName"),
        (lambda e: e.pop("record"), "record"),
        (lambda e: e.pop("objectMetadata"), "objectMetadata"),
        (lambda e: e["objectMetadata"].pop("nameSingular"), "objectMetadata.nameSingular"),
        (lambda e: e.update(eventDate="last tuesday"), "eventDate"),
        (lambda e: e.update(record=["not", "an", "object"]), "record"),
    ],
)
def test_a_json_body_that_is_not_a_twenty_event_says_what_is_wrong(
    won: dict[str, Any], change: Any, problem: str
) -> None:
    change(won)
    with pytest.raises(InvalidRequest) as caught:
        ADAPTER.parse(tenant=TENANT, body=twenty_body(won), received_at=SENT_AT)
    assert caught.value.message == "body is not a Twenty webhook event"
    assert any(p.startswith(problem + ":") for p in caught.value.details["problems"]), caught.value.details


def test_a_hubspot_body_is_not_a_twenty_event() -> None:
    hubspot = [{"eventId": 1, "subscriptionType": "deal.propertyChange", "objectId": 42}]
    with pytest.raises(InvalidRequest, match="not a Twenty webhook event"):
        ADAPTER.parse(tenant=TENANT, body=json.dumps(hubspot).encode(), received_at=SENT_AT)


@pytest.mark.parametrize("name", ["opportunity.upserted", "opportunity", "opportunity.restored"])
def test_an_event_kind_billflow_does_not_handle_is_named(won: dict[str, Any], name: str) -> None:
    won["eventName"] = name
    with pytest.raises(InvalidRequest, match="unsupported Twenty event"):
        ADAPTER.parse(tenant=TENANT, body=twenty_body(won), received_at=SENT_AT)


@pytest.mark.parametrize("record_id", [None, "", 42])
def test_a_record_without_an_id_is_an_invalid_request(won: dict[str, Any], record_id: Any) -> None:
    if record_id is None:
        del won["record"]["id"]
    else:
        won["record"]["id"] = record_id
    with pytest.raises(InvalidRequest, match=r"record\.id"):
        ADAPTER.parse(tenant=TENANT, body=twenty_body(won), received_at=SENT_AT)


# --- fingerprint ---------------------------------------------------------------------------------
def test_the_same_body_signed_at_different_times_has_one_fingerprint(won: dict[str, Any]) -> None:
    first = received(won, timestamp_ms=SENT_MS)[0]
    again = received(won, timestamp_ms=SENT_MS + 90_000)[0]
    assert first.event_id == again.event_id
    assert first.received_at != again.received_at


def test_the_fingerprint_ignores_layout_and_key_order(won: dict[str, Any]) -> None:
    compact = ADAPTER.parse(tenant=TENANT, body=twenty_body(won), received_at=SENT_AT)[0]
    reordered = json.dumps(dict(reversed(list(won.items()))), indent=4).encode()
    relaid = ADAPTER.parse(tenant=TENANT, body=reordered, received_at=SENT_AT)[0]
    assert compact.event_id == relaid.event_id


@pytest.mark.parametrize(
    "other",
    ["opportunity-stage-proposal", "opportunity-amount-edited", "opportunity-won-custom-stage",
     "opportunity-created"],
)
def test_different_changes_have_different_fingerprints(won: dict[str, Any], other: str) -> None:
    assert received(won)[0].event_id != received(twenty_event(other))[0].event_id


def test_the_fingerprint_depends_on_the_tenant_and_the_webhook(won: dict[str, Any]) -> None:
    base = received(won)[0].event_id
    assert received(won, tenant="other-tenant")[0].event_id != base
    won["webhookId"] = "0b7f0a55-3a0e-4f3c-9d8e-5d51a8f4f0a1"  # a second webhook of the workspace
    assert received(won)[0].event_id != base


def test_sample_files_are_what_twenty_posts() -> None:
    # Keys in the order Twenty builds them (transform-event-batch-to-webhook-events.ts), no secret leaked.
    order = ["targetUrl", "eventName", "objectMetadata", "workspaceId", "webhookId", "eventDate", "userId",
             "workspaceMemberId", "record", "updatedFields"]
    for sample in SAMPLES:
        keys = list(json.loads(Path(EVENTS_DIR / "twenty" / sample).read_text()))
        assert keys == [k for k in order if k in keys], sample
        assert "secret" not in keys


def test_a_non_ascii_signature_is_unauthorized_not_a_crash(won: dict[str, Any]) -> None:
    headers, body = signed_twenty_delivery(SECRET, won, SENT_MS)
    headers["X-Twenty-Webhook-Signature"] = "é" * 64
    with pytest.raises(Unauthorized):
        verify(headers, body)


@pytest.mark.parametrize("timestamp", ["1_773_843_725_417", " 1773843725417 ", "١٧٧٣٨٤٣٧٢٥٤١٧"])
def test_a_timestamp_must_be_plain_ascii_digits(won: dict[str, Any], timestamp: str) -> None:
    headers, body = signed_twenty_delivery(SECRET, won, SENT_MS)
    headers["X-Twenty-Webhook-Timestamp"] = timestamp
    with pytest.raises(Unauthorized, match="milliseconds"):
        verify(headers, body)
