"""Webhook actions: the request render() stores, and the request on the wire (_prepare) with its signature."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import billflow.settings
import pytest
from billflow.actions import get_action_type
from billflow.actions.webhook import MASK, WebhookAction, _prepare
from billflow.errors import ConfigurationError
from billflow.storage.secrets import Connection

from tests.unit.test_actions_placeholders import INVOICE_RESULT, RECORD, run_state

SECRET = "hookSecret2026abc"
KEY = "acme:won-deal:opp:stage:1"


@pytest.fixture(autouse=True)
def development_stage(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("STAGE", raising=False)
    monkeypatch.delenv("WEBHOOK_RESTRICT_PORTS", raising=False)
    billflow.settings.get_settings.cache_clear()
    yield
    billflow.settings.get_settings.cache_clear()


def rendered(options: dict[str, Any], connection: str | None = None, **state: Any) -> dict[str, Any]:
    action: dict[str, Any] = {"type": "webhook", "options": options}
    if connection:
        action["connection"] = connection
    run = run_state(action, **state)
    return WebhookAction().render(run.actions[0], run)


def hook_connection(**settings: Any) -> Connection:
    return Connection(name="finance-hook", type="webhook", settings={"type": "webhook", **settings})


def test_the_registry_gives_this_type() -> None:
    assert isinstance(get_action_type("webhook"), WebhookAction)


# --- render ------------------------------------------------------------------------------------------
def test_render_builds_method_url_query_headers_and_a_raw_body() -> None:
    request = rendered({"url": "https://hooks.example.com/deals?source=billflow", "method": "put",
                        "query": {"deal": "${OPPORTUNITY.NAME}", "n": 2},
                        "headers": {"X-Invoice": "${INVOICE.ID}"},
                        "body": {"invoice": "${INVOICE.ID}", "micros": "{{ record.amount.amountMicros }}"}},
                       results=[INVOICE_RESULT])
    assert request == {
        "method": "PUT", "url": "https://hooks.example.com/deals?source=billflow", "connection": None,
        "query": [["deal", RECORD["name"]], ["n", "2"]], "headers": {"X-Invoice": "in_1Q2w3E"},
        "body_format": "raw", "body": {"invoice": "in_1Q2w3E", "micros": 12_500_000_000},
    }


def test_the_default_body_is_billflows_payload() -> None:
    request = rendered({"url": "https://hooks.example.com/x"})
    assert request["body_format"] == "default"
    assert set(request["body"]) == {"rule", "transition", "event", "results", "company", "contact"}
    assert request["body"]["event"]["record"] == RECORD


def test_form_bodies_are_pairs_of_text() -> None:
    request = rendered({"url": "https://hooks.example.com/x", "body_format": "form_urlencoded",
                        "body": {"name": "${OPPORTUNITY.NAME}", "won": True, "none": None,
                                 "amount": "${OPPORTUNITY.AMOUNT}"}})
    assert request["body"] == [["name", RECORD["name"]], ["won", "true"], ["none", ""], ["amount", "12500.00 USD"]]


def test_render_never_reads_the_connection() -> None:
    # The URL may come from the connection at send time; render stores only the connection's name.
    request = rendered({"body": {"a": 1}}, connection="finance-hook")
    assert request["url"] is None
    assert request["connection"] == "finance-hook"


@pytest.mark.parametrize(("options", "message"), [
    ({"url": "https://h.example/x", "method": "GET"}, "webhook method GET"),
    ({"url": "https://h.example/x", "body_format": "xml"}, "body_format 'xml'"),
    ({"url": "ftp://h.example/x"}, "not an absolute http"),
    ({}, "needs a url"),
    ({"url": "https://h.example/x", "headers": {"X-Name": "{{ record.name }}\r\nX-Evil: 1"}}, "line breaks"),
])
def test_render_refuses(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        rendered(options)


@pytest.mark.parametrize("switch", [("STAGE", "prod"), ("WEBHOOK_RESTRICT_PORTS", "true")])
def test_production_refuses_ports_other_than_80_and_443(
    monkeypatch: pytest.MonkeyPatch, switch: tuple[str, str]
) -> None:
    assert rendered({"url": "http://127.0.0.1:8080/x"})["url"] == "http://127.0.0.1:8080/x"  # any port locally
    monkeypatch.setenv(*switch)
    billflow.settings.get_settings.cache_clear()
    with pytest.raises(ConfigurationError, match="port 8080 is refused in production; webhooks may only use ports "
                                                 "80 and 443"):
        rendered({"url": "http://127.0.0.1:8080/x"})
    assert rendered({"url": "https://hooks.example.com:443/x"})["url"] == "https://hooks.example.com:443/x"
    assert rendered({"url": "http://hooks.example.com/x"})["url"] == "http://hooks.example.com/x"


# --- on the wire -------------------------------------------------------------------------------------
def request_for(options: dict[str, Any], **state: Any) -> dict[str, Any]:
    return rendered({"url": "https://hooks.example.com/deals", **options}, **state)


def test_the_seed_example_1_on_the_wire() -> None:
    # Query subscription_id=90343, name=basic; raw JSON {"created_date":"2019-03-06","event_id":"5675"}.
    request = request_for({"query": {"subscription_id": "90343", "name": "basic"},
                           "body": {"created_date": "2019-03-06", "event_id": "5675"}})
    prepared = _prepare(request, hook_connection(secret=SECRET), KEY)
    assert prepared.url == "https://hooks.example.com/deals?subscription_id=90343&name=basic"
    assert prepared.body == b'{"created_date":"2019-03-06","event_id":"5675"}'
    signed = 'namebasicsubscription_id90343{"created_date":"2019-03-06","event_id":"5675"}'
    assert prepared.headers["X-Zoho-Webhook-Signature"] == hmac.new(
        SECRET.encode(), signed.encode(), hashlib.sha256).hexdigest()
    assert prepared.headers["Content-Type"] == "application/json"
    assert prepared.headers["Idempotency-Key"] == KEY


def test_the_seed_example_2_on_the_wire() -> None:
    request = request_for({"query": {"customer_name": "Brandon", "status": "active"}, "body_format": "form_urlencoded",
                           "body": {"addon_description": "Monthly addon", "quantity": 1}})
    prepared = _prepare(request, hook_connection(secret=SECRET), KEY)
    assert prepared.body == b"addon_description=Monthly+addon&quantity=1"
    assert prepared.headers["Content-Type"] == "application/x-www-form-urlencoded"
    signed = "addon_descriptionMonthly addoncustomer_nameBrandonquantity1statusactive"
    assert prepared.headers["X-Zoho-Webhook-Signature"] == hmac.new(
        SECRET.encode(), signed.encode(), hashlib.sha256).hexdigest()


def test_multipart_signs_only_the_query_and_is_the_same_on_a_retry() -> None:
    request = request_for({"query": {"a": "1"}, "body_format": "form_data", "body": {"note": "x y", "n": 2}})
    prepared = _prepare(request, hook_connection(secret=SECRET), KEY)
    again = _prepare(request, hook_connection(secret=SECRET), KEY)
    assert prepared.body == again.body
    boundary = prepared.headers["Content-Type"].removeprefix("multipart/form-data; boundary=")
    assert prepared.body == (f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nx y\r\n'
                             f'--{boundary}\r\nContent-Disposition: form-data; name="n"\r\n\r\n2\r\n'
                             f"--{boundary}--\r\n").encode()
    assert prepared.headers["X-Zoho-Webhook-Signature"] == hmac.new(
        SECRET.encode(), b"a1", hashlib.sha256).hexdigest()


def test_connection_values_are_sent_signed_and_masked_in_the_preview() -> None:
    request = request_for({"query": {"deal": "won"}, "headers": {"X-Team": "finance"}, "body": {"a": 1}})
    connection = hook_connection(secret=SECRET, headers={"Authorization": "Bearer t0ps3cret"},
                                 query={"api_key": "k3y-value"})
    prepared = _prepare(request, connection, KEY)
    assert parse_qsl(urlsplit(prepared.url).query) == [("deal", "won"), ("api_key", "k3y-value")]
    assert prepared.headers["Authorization"] == "Bearer t0ps3cret"
    assert prepared.headers["X-Team"] == "finance"
    signed = 'api_keyk3y-valuedealwon{"a":1}'
    assert prepared.headers["X-Zoho-Webhook-Signature"] == hmac.new(
        SECRET.encode(), signed.encode(), hashlib.sha256).hexdigest()
    assert prepared.shown_url == f"https://hooks.example.com/deals?deal=won&api_key={MASK}"
    assert prepared.shown_headers["Authorization"] == MASK
    assert prepared.shown_headers["X-Zoho-Webhook-Signature"] == prepared.headers["X-Zoho-Webhook-Signature"]
    shown = json.dumps([prepared.shown_url, prepared.shown_headers])
    assert "t0ps3cret" not in shown
    assert "k3y-value" not in shown
    assert SECRET not in shown


def test_a_url_from_the_connection_shows_only_its_host() -> None:
    request = rendered({"body": {"a": 1}}, connection="finance-hook")
    prepared = _prepare(request, hook_connection(url="https://hooks.slack.example/services/T0/B0/XyZ?tok=1"), KEY)
    assert prepared.url == "https://hooks.slack.example/services/T0/B0/XyZ?tok=1"
    assert prepared.shown_url == f"https://hooks.slack.example/{MASK}?tok={MASK}"


def billflow_signature_of(secret: str, headers: dict[str, str], body: bytes | None) -> str:
    timestamp = headers["X-Billflow-Timestamp"]
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + (body or b""), hashlib.sha256).hexdigest()


def test_by_default_both_schemes_sign() -> None:
    prepared = _prepare(request_for({"body": {"a": 1}}), hook_connection(secret=SECRET), KEY)
    assert prepared.headers["X-Zoho-Webhook-Signature"] == hmac.new(
        SECRET.encode(), b'{"a":1}', hashlib.sha256).hexdigest()
    assert prepared.headers["X-Billflow-Signature"] == billflow_signature_of(SECRET, prepared.headers, prepared.body)


def test_signature_options_of_the_connection() -> None:
    request = request_for({"body": {"a": 1}})
    renamed = _prepare(request, hook_connection(secret=SECRET, signature_scheme="zoho", signature_header="X-Signature",
                                                signature_encoding="base64"), KEY)
    assert "X-Zoho-Webhook-Signature" not in renamed.headers
    assert "X-Billflow-Signature" not in renamed.headers
    assert renamed.headers["X-Signature"].endswith("=")
    own = _prepare(request, hook_connection(secret="any-secret-works-here", signature_scheme="billflow"), KEY)
    assert own.headers["X-Billflow-Signature"] == billflow_signature_of("any-secret-works-here", own.headers, own.body)
    assert "X-Zoho-Webhook-Signature" not in own.headers
    unsigned = _prepare(request, None, KEY)
    assert not any("signature" in h.lower() for h in unsigned.headers)


@pytest.mark.parametrize(("settings", "message"), [
    ({"secret": "too-short"}, "connection 'finance-hook': a webhook secret must be 12-50 letters and digits"),
    ({"secret": SECRET, "signature_scheme": "rsa"}, "signature_scheme 'rsa'; one of both, zoho, billflow"),
    ({"secret": "not-alnum-but-long"}, "or set signature_scheme: billflow"),
    ({"secret": SECRET, "signature_encoding": "hexadecimal"}, "signature_encoding 'hexadecimal'"),
])
def test_bad_signing_settings_are_configuration_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        _prepare(request_for({"body": {"a": 1}}), hook_connection(**settings), KEY)


def test_a_content_type_header_of_the_rule_wins_except_for_multipart() -> None:
    raw = _prepare(request_for({"headers": {"content-type": "application/vnd.api+json"}, "body": {}}), None, KEY)
    assert raw.headers["content-type"] == "application/vnd.api+json"
    assert "Content-Type" not in raw.headers
    form = _prepare(request_for({"headers": {"Content-Type": "text/plain"}, "body_format": "form_data",
                                 "body": {"a": "1"}}), None, KEY)
    assert form.headers["Content-Type"].startswith("multipart/form-data; boundary=billflow-")
