"""The generic source: each documented signature scheme checked against signatures made by an independent
implementation (HMAC written out from RFC 2104 here, not Python's hmac module), the JSONata mapping to
CrmEvent, and configuration errors found when the source is saved."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from billflow.errors import ConfigurationError, InvalidRequest, Unauthorized
from billflow.sources.generic import GenericAdapter, config_problems
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 1, 14, 3, 30, tzinfo=UTC)
SECRET = "whsec_generic_test_secret"
MAPPING = """{"object": type, "action": action, "record_id": id, "record": payload,
              "changed_fields": changed, "occurred_at": at, "event_id": event}"""
BODY = json.dumps({"type": "deal", "action": "updated", "id": "D-1", "payload": {"id": "D-1", "stage": "won"},
                   "changed": ["stage"], "at": "2026-12-01T14:03:27Z", "event": "evt_1"}).encode()


def rfc2104_hmac(hash_name: str, key: bytes, message: bytes) -> bytes:
    """HMAC as RFC 2104 defines it: H((K ^ opad) || H((K ^ ipad) || m)), block size 64 for SHA-1 and SHA-256."""
    digest: Callable[[bytes], bytes] = lambda data: hashlib.new(hash_name, data).digest()  # noqa: E731
    block = 64
    if len(key) > block:
        key = digest(key)
    key = key.ljust(block, b"\0")
    inner = digest(bytes(b ^ 0x36 for b in key) + message)
    return digest(bytes(b ^ 0x5C for b in key) + inner)


def adapter(**webhook: Any) -> GenericAdapter:
    return GenericAdapter("crm", {"webhook": webhook, "mapping": MAPPING})


def verify(source: GenericAdapter, headers: dict[str, str], body: bytes = BODY, now: datetime = NOW) -> None:
    source.verify(secret=SECRET, method="POST", url="https://hooks.example.com/webhooks/acme/crm",
                  headers={k.lower(): v for k, v in headers.items()}, body=body, now=now, tolerance_seconds=300)


@pytest.mark.parametrize(("algorithm", "encoding"), [("sha256", "hex"), ("sha256", "base64"),
                                                     ("sha1", "hex"), ("sha1", "base64")])
def test_hmac_over_the_body_in_each_algorithm_and_encoding(algorithm: str, encoding: str) -> None:
    raw = rfc2104_hmac(algorithm, SECRET.encode(), BODY)
    signature = raw.hex() if encoding == "hex" else base64.b64encode(raw).decode()
    source = adapter(algorithm=algorithm, encoding=encoding, signature_header="X-Signature")

    verify(source, {"X-Signature": signature})
    with pytest.raises(Unauthorized, match="does not match"):
        verify(source, {"X-Signature": signature}, body=BODY + b" ")


def test_github_style_prefix_and_stripe_style_timestamp_dot_body_with_freshness() -> None:
    timestamp = str(int(NOW.timestamp()))
    raw = rfc2104_hmac("sha256", SECRET.encode(), f"{timestamp}.".encode() + BODY)
    source = adapter(signature_header="X-Hub-Signature-256", prefix="sha256=", message="{timestamp}.{body}",
                     timestamp_header="X-Timestamp", tolerance_seconds=300)
    headers = {"X-Hub-Signature-256": "sha256=" + raw.hex(), "X-Timestamp": timestamp}

    verify(source, headers)
    with pytest.raises(Unauthorized, match="stale"):
        verify(source, headers, now=NOW + timedelta(seconds=301))
    with pytest.raises(Unauthorized, match="start with 'sha256='"):
        verify(source, {**headers, "X-Hub-Signature-256": raw.hex()})
    with pytest.raises(Unauthorized, match="missing X-Timestamp"):
        verify(source, {"X-Hub-Signature-256": "sha256=" + raw.hex()})


def test_a_template_with_milliseconds_method_and_url() -> None:
    timestamp = str(int(NOW.timestamp() * 1000))
    url = "https://hooks.example.com/webhooks/acme/crm"
    raw = rfc2104_hmac("sha256", SECRET.encode(), f"v1:{timestamp}:POST:{url}:".encode() + BODY)
    source = adapter(signature_header="X-Sig", encoding="base64", message="v1:{timestamp}:{method}:{url}:{body}",
                     timestamp_header="X-Sent-At", timestamp_unit="ms")

    verify(source, {"X-Sig": base64.b64encode(raw).decode(), "X-Sent-At": timestamp})


@settings(max_examples=60, deadline=None)
@given(body=st.binary(max_size=300), forged=st.text(max_size=80))
def test_no_forged_or_garbled_signature_passes_and_none_fails_with_anything_but_401(body: bytes, forged: str) -> None:
    source = adapter(signature_header="X-Signature")
    genuine = rfc2104_hmac("sha256", SECRET.encode(), body).hex()
    verify(source, {"X-Signature": genuine}, body=body)
    if forged.strip().lower() != genuine:
        with pytest.raises(Unauthorized):
            verify(source, {"X-Signature": forged}, body=body)


def test_http_basic_credentials_as_pipedrive_sends_them() -> None:
    source = GenericAdapter("pipedrive", {"webhook": {"scheme": "basic"}, "mapping": MAPPING})
    good = "Basic " + base64.b64encode(b"billflow:s3cret").decode()

    source.verify(secret="billflow:s3cret", method="POST", url="", headers={"authorization": good}, body=BODY,
                  now=NOW, tolerance_seconds=300)
    for header, reason in [("", "missing HTTP Basic"), ("Bearer abc", "missing HTTP Basic"),
                           ("Basic !!!", "not base64"),
                           ("Basic " + base64.b64encode(b"billflow:wrong").decode(), "do not match")]:
        with pytest.raises(Unauthorized, match=reason):
            source.verify(secret="billflow:s3cret", method="POST", url="", headers={"authorization": header},
                          body=BODY, now=NOW, tolerance_seconds=300)


def test_the_mapping_makes_events_single_or_in_arrays_with_stable_ids() -> None:
    single = adapter(signature_header="X-S").parse(tenant="acme", body=BODY, received_at=NOW)
    batch = GenericAdapter("crm", {"webhook": {"signature_header": "X-S"}, "mapping": f"events.({MAPPING})"})
    body = json.dumps({"events": [json.loads(BODY), {**json.loads(BODY), "id": "D-2", "event": None,
                                                     "changed": "stage"}]}).encode()

    [event] = single
    first, second = batch.parse(tenant="acme", body=body, received_at=NOW)
    again = batch.parse(tenant="acme", body=body, received_at=NOW + timedelta(minutes=1))[1]

    assert (event.event_id, event.object, event.action, event.record_id) == ("crm-evt_1", "deal", "updated", "D-1")
    assert event.changed_fields == ["stage"] and event.occurred_at == datetime(2026, 12, 1, 14, 3, 27, tzinfo=UTC)
    assert first.record_id == "D-1" and second.record_id == "D-2"
    assert second.changed_fields == ["stage"]  # JSONata's one-key sequence is a string: taken as a list
    assert second.event_id == again.event_id  # no id given: a fingerprint, the same on redelivery


@pytest.mark.parametrize(("body", "reason"), [
    (b"not json", "not JSON"),
    (json.dumps({"type": "deal", "action": "merged", "id": "1", "payload": {}}).encode(), "action 'merged'"),
    (json.dumps({"type": "deal", "action": "updated", "payload": {}}).encode(), "record_id is missing"),
    (json.dumps({"type": "deal", "action": "updated", "id": "1", "payload": []}).encode(), "record is not an object"),
    (json.dumps({"type": "deal", "action": "updated", "id": "1", "payload": {}, "at": "soon"}).encode(),
     "occurred_at 'soon' is not a time"),
    (json.dumps({}).encode(), "action is missing"),
])
def test_bodies_the_mapping_cannot_make_an_event_of_are_refused_with_the_reason(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidRequest, match=reason):
        adapter(signature_header="X-S").parse(tenant="acme", body=body, received_at=NOW)


def test_a_bad_configuration_is_refused_when_saved_with_every_problem_named() -> None:
    problems = config_problems({
        "webhook": {"scheme": "hmac", "algorithm": "md5", "encoding": "hex", "message": "{timestamp}.{body}",
                    "tolerance_seconds": 0},
        "mapping": '{"object": "deal", "action": ',
        "record_mapping": "$merge([",
    })
    text = "; ".join(problems)

    assert "webhook.algorithm" in text and "webhook.signature_header" in text
    assert "webhook.timestamp_header: needed" in text and "webhook.tolerance_seconds" in text
    assert "mapping: invalid JSONata at position" in text and "record_mapping: invalid JSONata" in text
    with pytest.raises(ConfigurationError, match="misconfigured"):
        GenericAdapter("crm", {"webhook": {"algorithm": "md5"}, "mapping": "x"})


def test_the_pipedrive_example_maps_every_v2_webhook() -> None:
    document = yaml.safe_load((ROOT / "examples" / "pipedrive" / "connections.yaml").read_text())
    source = GenericAdapter("pipedrive", document["tenants"]["demo"]["sources"]["pipedrive"])
    events = {name: source.parse(tenant="acme", body=(ROOT / "events" / "pipedrive" / f"{name}.json").read_bytes(),
                                 received_at=NOW)[0]
              for name in ("deal-won", "deal-title-edited", "deal-created", "deal-deleted")}

    won = events["deal-won"]
    assert (won.action, won.object, won.record_id) == ("updated", "deal", "4521")
    assert set(won.changed_fields or ()) == {"status", "won_time", "close_time", "update_time"}
    assert won.record["amount"] == {"amountMicros": 12_500_000_000, "currencyCode": "USD"}
    assert won.record["name"] == "Acme rollout" and won.record["status"] == "won"
    assert won.occurred_at == datetime(2026, 12, 1, 14, 3, 27, tzinfo=UTC)  # data.update_time
    assert events["deal-created"].action == "created" and events["deal-created"].changed_fields is None
    assert events["deal-deleted"].action == "deleted" and events["deal-deleted"].record["id"] == "4521"
    assert events["deal-title-edited"].changed_fields == ["title", "update_time"]
