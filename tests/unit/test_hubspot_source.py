"""billflow.sources.hubspot: signature v3 (checked against an independent signer), batches judged event by
event, normalisation into CrmEvents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from billflow.errors import InvalidRequest, Unauthorized
from billflow.sources import BatchSource, ConfigurableSource, get_source
from billflow.sources.hubspot import ADAPTER, HubSpotAdapter

from tests.fakes.hubspot_signing import (
    creation,
    hubspot_body,
    property_change,
    v1_headers,
    v2_headers,
    v3_headers,
)

SECRET = "a1b2c3d4-e5f6-47a8-9b0c-1d2e3f4a5b6c"  # a client secret's shape
URL = "https://hooks.example.com/webhooks/acme/hubspot"
NOW_MS = 1_780_000_000_000
NOW = datetime.fromtimestamp(NOW_MS / 1000, UTC)


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def verify(adapter: HubSpotAdapter, headers: dict[str, str], body: bytes, *, url: str = URL,
           now: datetime = NOW) -> None:
    adapter.verify(secret=SECRET, method="POST", url=url, headers=lower(headers), body=body, now=now,
                   tolerance_seconds=300)


def batch(events: list[dict[str, Any]], tenant: str = "acme") -> Any:
    return ADAPTER.parse_batch(tenant=tenant, body=hubspot_body(events), received_at=NOW)


# --- signature -----------------------------------------------------------------------------------
def test_the_registry_serves_the_hubspot_adapter_as_a_configurable_batch_source() -> None:
    adapter = get_source("hubspot")
    assert adapter is ADAPTER
    assert isinstance(adapter, BatchSource) and isinstance(adapter, ConfigurableSource)


def test_a_v3_signature_from_the_documented_recipe_verifies() -> None:
    body = hubspot_body([property_change(1, "dealstage", "closedwon", event_id=1, occurred_at=NOW_MS)])
    verify(ADAPTER, v3_headers(SECRET, "POST", URL, body, NOW_MS), body)


def test_the_listed_escapes_of_the_uri_are_decoded_before_signing() -> None:
    url = "https://hooks.example.com/webhooks/acme/hubspot?next=https%3A%2F%2Fx.example%2Fa%40b%2C%28c%29"
    body = hubspot_body([property_change(1, "dealstage", "closedwon", event_id=1, occurred_at=NOW_MS)])
    verify(ADAPTER, v3_headers(SECRET, "POST", url, body, NOW_MS), body, url=url)
    # The signer decoded the URI; signing the raw URI gives another signature, which must not pass.
    import base64
    import hashlib
    import hmac
    raw = base64.b64encode(hmac.new(SECRET.encode(), b"POST" + url.encode() + body + str(NOW_MS).encode(),
                                    hashlib.sha256).digest()).decode()
    with pytest.raises(Unauthorized):
        verify(ADAPTER, {"X-HubSpot-Signature-v3": raw, "X-HubSpot-Request-Timestamp": str(NOW_MS)}, body, url=url)


@pytest.mark.parametrize("tamper", ["body", "url", "method", "secret", "timestamp"])
def test_any_signed_part_changed_is_refused(tamper: str) -> None:
    body = hubspot_body([property_change(1, "dealstage", "closedwon", event_id=1, occurred_at=NOW_MS)])
    headers = v3_headers(
        "other" if tamper == "secret" else SECRET, "PUT" if tamper == "method" else "POST",
        URL + "x" if tamper == "url" else URL, body, NOW_MS)
    if tamper == "timestamp":
        headers["X-HubSpot-Request-Timestamp"] = str(NOW_MS - 1000)
    with pytest.raises(Unauthorized):
        verify(ADAPTER, headers, body.replace(b"closedwon", b"closedlost") if tamper == "body" else body)


def test_a_request_older_than_five_minutes_is_refused_as_stale() -> None:
    body = hubspot_body([property_change(1, "dealstage", "closedwon", event_id=1, occurred_at=NOW_MS)])
    sent = NOW_MS - 301_000
    with pytest.raises(Unauthorized, match="stale"):
        verify(ADAPTER, v3_headers(SECRET, "POST", URL, body, sent), body)
    verify(ADAPTER, v3_headers(SECRET, "POST", URL, body, NOW_MS - 299_000), body)  # just inside


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_v1_and_v2_are_refused_with_a_clear_error_unless_configured(version: str) -> None:
    body = hubspot_body([property_change(1, "dealstage", "closedwon", event_id=1, occurred_at=NOW_MS)])
    headers = v1_headers(SECRET, body) if version == "v1" else v2_headers(SECRET, "POST", URL, body)
    with pytest.raises(Unauthorized, match=f"signature {version} is refused.*signature_versions"):
        verify(ADAPTER, headers, body)
    verify(ADAPTER.configured({"signature_versions": ["v3", version]}), headers, body)


def test_the_configured_webhook_url_is_what_is_signed() -> None:
    public = "https://billing.example.com/hubspot"
    body = hubspot_body([property_change(1, "dealstage", "closedwon", event_id=1, occurred_at=NOW_MS)])
    headers = v3_headers(SECRET, "POST", public, body, NOW_MS)
    with pytest.raises(Unauthorized):
        verify(ADAPTER, headers, body)  # billflow saw another URL (a proxy, a custom domain)
    verify(ADAPTER.configured({"webhook_url": public}), headers, body)


def test_a_missing_signature_says_which_headers_are_missing() -> None:
    with pytest.raises(Unauthorized, match="X-HubSpot-Signature-v3"):
        verify(ADAPTER, {}, b"[]")


# --- batches -------------------------------------------------------------------------------------
def test_a_batch_with_duplicates_keeps_each_event_once_in_its_order() -> None:
    won = property_change(101, "dealstage", "closedwon", event_id=7, occurred_at=NOW_MS - 2000)
    amount = property_change(101, "amount", "1500.50", event_id=8, occurred_at=NOW_MS - 5000)
    parsed = batch([won, amount, won, dict(won, attemptNumber=1)])
    assert [e.event_id for e in parsed.events] == ["hubspot-62515-7", "hubspot-62515-8"]
    assert parsed.skipped == []
    stage, money = parsed.events
    assert (stage.object, stage.action, stage.record_id) == ("deal", "updated", "101")
    assert stage.record == {"id": "101", "hs_object_id": "101", "dealstage": "closedwon"}
    assert stage.changed_fields == ["dealstage"]
    assert stage.occurred_at == datetime.fromtimestamp((NOW_MS - 2000) / 1000, UTC)
    assert money.record["amount"] == {"amountMicros": 1_500_500_000, "currencyCode": None, "value": "1500.50"}


def test_invalid_events_are_skipped_with_their_reason_and_the_rest_kept() -> None:
    good = property_change(5, "dealstage", "closedwon", event_id=1, occurred_at=NOW_MS)
    parsed = batch([
        good,
        "not an event",
        dict(good, eventId=2, subscriptionType="deal.associationChange"),
        dict(good, eventId=3, objectId=None),
        dict(good, eventId=4, propertyName=None),
        dict(good, eventId=5, occurredAt="yesterday"),
        dict(good, eventId=6, subscriptionType="object.propertyChange", objectTypeId="2-999"),
    ])
    assert [e.event_id for e in parsed.events] == ["hubspot-62515-1"]
    reasons = {s.index: s.reason for s in parsed.skipped}
    assert set(reasons) == {1, 2, 3, 4, 5, 6}
    assert "associationChange" in reasons[2] and "objectId" in reasons[3] and "propertyName" in reasons[4]
    assert "occurredAt" in reasons[5] and "2-999" in reasons[6]
    assert [s.event_id for s in parsed.skipped][1:] == ["2", "3", "4", "5", "6"]


def test_a_body_that_is_no_batch_is_refused_whole() -> None:
    for body in (b"{}", b"not json", hubspot_body([creation(1, event_id=i, occurred_at=NOW_MS) for i in range(101)])):
        with pytest.raises(InvalidRequest):
            ADAPTER.parse_batch(tenant="acme", body=body, received_at=NOW)


def test_creation_deletion_and_object_events_name_their_object() -> None:
    parsed = batch([
        creation(1, event_id=1, occurred_at=NOW_MS),
        creation(2, event_id=2, occurred_at=NOW_MS, subscription="deal.deletion"),
        property_change(3, "hs_payment_status", "PAID", event_id=3, occurred_at=NOW_MS,
                        subscription="object.propertyChange", objectTypeId="0-14"),
        property_change(4, "hs_latest_status", "succeeded", event_id=4, occurred_at=NOW_MS,
                        subscription="object.propertyChange", objectTypeId="0-101"),
        creation(5, event_id=5, occurred_at=NOW_MS, subscription="company.creation"),
    ])
    assert [(e.object, e.action) for e in parsed.events] == [
        ("deal", "created"), ("deal", "deleted"), ("quote", "updated"), ("commerce_payment", "updated"),
        ("company", "created")]
    assert parsed.events[0].changed_fields is None


def test_portals_outside_the_configured_ones_are_skipped() -> None:
    adapter = ADAPTER.configured({"portal_ids": [62515]})
    events = [property_change(1, "dealstage", "closedwon", event_id=1, occurred_at=NOW_MS),
              property_change(2, "dealstage", "closedwon", event_id=2, occurred_at=NOW_MS, portal_id=999)]
    parsed = adapter.parse_batch(tenant="acme", body=hubspot_body(events), received_at=NOW)
    assert [e.record_id for e in parsed.events] == ["1"]
    assert "portal 999" in parsed.skipped[0].reason


def test_a_misspelt_signature_version_refuses_rather_than_guesses() -> None:
    with pytest.raises(Unauthorized, match="signature_versions"):
        ADAPTER.configured({"signature_versions": ["V3"]})


def test_parse_for_dry_runs_refuses_a_batch_with_nothing_usable() -> None:
    with pytest.raises(InvalidRequest, match="no event"):
        ADAPTER.parse(tenant="acme", body=b'[{"eventId": 1}]', received_at=NOW + timedelta(0))


@pytest.mark.parametrize("sample", ["deal-won-batch", "quote-paid-batch", "payment-succeeded-batch"])
def test_the_sample_batches_in_events_parse_cleanly(sample: str) -> None:
    from tests.fakes.signing import EVENTS_DIR

    body = (EVENTS_DIR / "hubspot" / f"{sample}.json").read_bytes()
    parsed = ADAPTER.parse_batch(tenant="acme", body=body, received_at=NOW)
    assert parsed.skipped == [] and parsed.events
    assert len({e.event_id for e in parsed.events}) == len(parsed.events)
    if sample == "deal-won-batch":  # the retried event (attemptNumber 1) is the same event
        assert [(e.action, e.changed_fields) for e in parsed.events] == [
            ("updated", ["dealstage"]), ("updated", ["amount"]), ("created", None)]
