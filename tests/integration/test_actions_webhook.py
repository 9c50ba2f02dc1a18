"""Webhook actions against a real HTTP receiver on 127.0.0.1 that checks what arrives the way a customer's
server would: the method, the query, the headers, the body in its format, and seed 004's signature,
recomputed on the receiving side from what was received. Connections live in Secrets Manager (moto)."""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import billflow.aws
import billflow.settings
import billflow.storage.secrets
import pytest
from billflow.actions.webhook import WebhookAction
from billflow.errors import ConfigurationError, TargetRejected, TransientError
from moto import mock_aws

from tests.fakes.base import FakeServer, Request, Response
from tests.unit.test_actions_placeholders import INVOICE_RESULT, RECORD, run_state

SECRET = "Receiver2026Secret"
TOKEN = "Bearer only-the-connection-knows"


class Receiver(FakeServer):
    """A customer's endpoint: verifies seed 004's signature itself and answers with a delivery id."""

    name = "webhook-receiver"

    def __init__(self, secret: str = SECRET) -> None:
        super().__init__()
        self.secret = secret
        self.status = 200
        for method in ("POST", "PUT", "DELETE"):
            self.route(method, "/hooks/.*", self._receive)

    def _receive(self, req: Request) -> Response:
        if not self.signature_ok(req):
            self.violate(f"{req.method} {req.path}: bad X-Zoho-Webhook-Signature")
            return Response(401, {"message": "bad signature"})
        if self.status >= 400:
            return Response(self.status, {"message": "the receiver is unhappy"})
        return Response(200, {"id": f"delivery-{len(self.requests)}"})

    def signed_string(self, req: Request) -> str:
        """Seed 004, from the receiver's side: query pairs and (decoded) form pairs sorted by key, each key
        then value, then the raw JSON body."""
        pairs = [(key, value) for key, values in req.query.items() for value in values]
        content_type = req.headers.get("content-type", "")
        raw_json = ""
        if content_type.startswith("application/x-www-form-urlencoded"):
            pairs += parse_qsl(req.body.decode(), keep_blank_values=True)
        elif content_type.startswith("application/json"):
            raw_json = req.body.decode()
        return "".join(key + value for key, value in sorted(pairs, key=lambda kv: kv[0])) + raw_json

    def signature_ok(self, req: Request) -> bool:
        expected = hmac.new(self.secret.encode(), self.signed_string(req).encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, req.headers.get("x-zoho-webhook-signature", ""))


def multipart_fields(req: Request) -> list[tuple[str, str]]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {req.headers['content-type']}\r\n\r\n".encode() + req.body)
    return [(str(part.get_param("name", header="content-disposition")), str(part.get_content()))
            for part in message.iter_parts()]


# --- fixtures --------------------------------------------------------------------------------------
def _reset() -> None:
    billflow.settings.get_settings.cache_clear()
    billflow.aws.reset_clients()
    billflow.storage.secrets.reset_secret_store()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "SECRETS_PREFIX": "billflow/test"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("STAGE", raising=False)
    monkeypatch.delenv("WEBHOOK_RESTRICT_PORTS", raising=False)
    _reset()
    with mock_aws():
        yield
    _reset()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


def connection(name: str, **settings: Any) -> None:
    billflow.aws.client("secretsmanager").create_secret(
        Name=f"billflow/test/acme/connection/{name}", SecretString=json.dumps({"type": "webhook", **settings}))


def send(options: dict[str, Any], connection_name: str | None = "hook", key: str = "acme:run:0") -> Any:
    action: dict[str, Any] = {"type": "webhook", "options": options}
    if connection_name:
        action["connection"] = connection_name
    run = run_state(action, results=[INVOICE_RESULT])
    handler = WebhookAction()
    request = handler.render(run.actions[0], run)
    return handler.send(run.actions[0], request, run, key)


# --- methods x body formats --------------------------------------------------------------------------
BODIES: dict[str, dict[str, Any]] = {
    "default": {},
    "raw": {"body_format": "raw", "body": {"invoice": "${INVOICE.ID}", "micros": "{{ record.amount.amountMicros }}",
                                           "name": "${OPPORTUNITY.NAME}"}},
    "form_urlencoded": {"body_format": "form_urlencoded",
                        "body": {"invoice": "${INVOICE.ID}", "name": "${OPPORTUNITY.NAME}", "note": "a&b=c d"}},
    "form_data": {"body_format": "form_data", "body": {"invoice": "${INVOICE.ID}", "name": "${OPPORTUNITY.NAME}"}},
}


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
@pytest.mark.parametrize("body_format", list(BODIES))
def test_methods_and_body_formats_arrive_signed(
    aws: None, receiver: Receiver, method: str, body_format: str
) -> None:
    connection("hook", secret=SECRET)
    result = send({"url": f"{receiver.url}/hooks/deals?source=billflow", "method": method,
                   "query": {"deal": "${OPPORTUNITY.NAME}", "stage": "{{ record.stage }}"},
                   "headers": {"X-Team": "finance", "X-Invoice": "${INVOICE.ID}"}, **BODIES[body_format]})

    assert receiver.violations == []  # the receiver recomputed the signature and it matched
    [req] = receiver.requests
    assert (req.method, req.path) == (method, "/hooks/deals")
    assert req.query == {"source": ["billflow"], "deal": [RECORD["name"]], "stage": ["CUSTOMER"]}
    assert req.headers["x-team"] == "finance"
    assert req.headers["x-invoice"] == "in_1Q2w3E"
    assert req.headers["idempotency-key"] == "acme:run:0"
    assert result.external_id == "delivery-1"
    assert result.details == {"status": 200, "method": method}
    content_type = req.headers["content-type"]
    if body_format == "default":
        assert content_type == "application/json"
        body = json.loads(req.body)
        assert body["event"]["record"] == RECORD
        assert body["results"] == [INVOICE_RESULT]
        assert body["company"]["name"] == "Acme Robotics"
    elif body_format == "raw":
        assert content_type == "application/json"
        assert json.loads(req.body) == {"invoice": "in_1Q2w3E", "micros": 12_500_000_000, "name": RECORD["name"]}
    elif body_format == "form_urlencoded":
        assert content_type == "application/x-www-form-urlencoded"
        assert parse_qsl(req.body.decode()) == [("invoice", "in_1Q2w3E"), ("name", RECORD["name"]),
                                                ("note", "a&b=c d")]
    else:
        assert content_type.startswith("multipart/form-data; boundary=")
        assert multipart_fields(req) == [("invoice", "in_1Q2w3E"), ("name", RECORD["name"])]


def test_a_tampered_request_fails_the_receivers_check(aws: None, receiver: Receiver) -> None:
    # The receiver's check is real: the same request with another secret is refused.
    receiver.secret = "SomeOtherSecret123"
    connection("hook", secret=SECRET)
    with pytest.raises(TargetRejected, match="401"):
        send({"url": f"{receiver.url}/hooks/x", "body": {"a": 1}})
    assert receiver.violations == ["POST /hooks/x: bad X-Zoho-Webhook-Signature"]


def test_the_seed_example_1_as_received(aws: None, receiver: Receiver) -> None:
    connection("hook", secret=SECRET)
    send({"url": f"{receiver.url}/hooks/subscriptions", "query": {"subscription_id": "90343", "name": "basic"},
          "body": {"created_date": "2019-03-06", "event_id": "5675"}})
    [req] = receiver.requests
    assert receiver.signed_string(req) == (
        'namebasicsubscription_id90343{"created_date":"2019-03-06","event_id":"5675"}')
    assert req.headers["x-zoho-webhook-signature"] == hmac.new(
        SECRET.encode(), receiver.signed_string(req).encode(), hashlib.sha256).hexdigest()
    # By default billflow's own timestamped signature rides along, for receivers written for it.
    timestamp = req.headers["x-billflow-timestamp"]
    assert req.headers["x-billflow-signature"] == "sha256=" + hmac.new(
        SECRET.encode(), timestamp.encode() + b"." + req.body, hashlib.sha256).hexdigest()
    assert receiver.violations == []


# --- the connection's part -----------------------------------------------------------------------------
def test_connection_headers_query_and_url_are_sent_and_signed(aws: None, receiver: Receiver) -> None:
    connection("hook", secret=SECRET, url=f"{receiver.url}/hooks/from-connection",
               headers={"Authorization": TOKEN}, query={"api_key": "k3y"})
    send({"body": {"a": 1}})
    [req] = receiver.requests
    assert req.path == "/hooks/from-connection"
    assert req.query == {"api_key": ["k3y"]}
    assert req.headers["authorization"] == TOKEN
    assert receiver.violations == []


def test_the_preview_is_the_sent_request_without_secrets(aws: None, receiver: Receiver) -> None:
    connection("hook", secret=SECRET, headers={"Authorization": TOKEN}, query={"api_key": "k3y"})
    options = {"url": f"{receiver.url}/hooks/deals", "method": "PUT", "query": {"deal": "won"},
               "body_format": "form_urlencoded", "body": {"invoice": "${INVOICE.ID}"}}
    run = run_state({"type": "webhook", "connection": "hook", "options": options}, results=[INVOICE_RESULT])
    handler = WebhookAction()
    request = handler.render(run.actions[0], run)
    [preview] = handler.preview(run.actions[0], request, run, "acme:run:0")
    assert receiver.requests == []  # a preview sends nothing
    handler.send(run.actions[0], request, run, "acme:run:0")
    [req] = receiver.requests
    assert preview["method"] == "PUT"
    assert preview["url"] == f"{receiver.url}/hooks/deals?deal=won&api_key=*****"
    assert preview["body"] == "invoice=in_1Q2w3E"
    assert preview["headers"]["Authorization"] == "*****"
    assert preview["headers"]["X-Zoho-Webhook-Signature"] == req.headers["x-zoho-webhook-signature"]
    shown = json.dumps([request, preview])
    for secret in (SECRET, TOKEN, "k3y"):
        assert secret not in shown


def test_billflows_own_scheme_when_the_connection_asks(aws: None, receiver: Receiver) -> None:
    receiver.signature_ok = lambda req: True  # type: ignore[method-assign]  # checked below instead
    connection("hook", secret="local-demo-hook-secret", signature_scheme="billflow")
    send({"url": f"{receiver.url}/hooks/x", "body": {"a": 1}})
    [req] = receiver.requests
    timestamp = req.headers["x-billflow-timestamp"]
    assert req.headers["x-billflow-signature"] == "sha256=" + hmac.new(
        b"local-demo-hook-secret", timestamp.encode() + b"." + req.body, hashlib.sha256).hexdigest()
    assert "x-zoho-webhook-signature" not in req.headers


def test_an_unsigned_webhook_without_connection(aws: None, receiver: Receiver) -> None:
    receiver.signature_ok = lambda req: "x-zoho-webhook-signature" not in req.headers  # type: ignore[method-assign]
    result = send({"url": f"{receiver.url}/hooks/x", "body": {"a": 1}}, connection_name=None)
    assert result.external_id == "delivery-1"
    assert receiver.violations == []


# --- refusals --------------------------------------------------------------------------------------------
def test_failures_are_classified(aws: None, receiver: Receiver) -> None:
    connection("hook", secret=SECRET)
    receiver.status = 503
    with pytest.raises(TransientError, match="webhook answered 503"):
        send({"url": f"{receiver.url}/hooks/x", "body": {}})
    receiver.status = 422
    with pytest.raises(TargetRejected, match="webhook answered 422: the receiver is unhappy"):
        send({"url": f"{receiver.url}/hooks/x", "body": {}})


@pytest.mark.parametrize("switch", [("STAGE", "prod"), ("WEBHOOK_RESTRICT_PORTS", "1")])
def test_production_refuses_the_receivers_port_and_sends_nothing(
    aws: None, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, switch: tuple[str, str]
) -> None:
    connection("hook", secret=SECRET, url=f"{receiver.url}/hooks/from-connection")
    monkeypatch.setenv(*switch)
    billflow.settings.get_settings.cache_clear()
    port = receiver.url.rsplit(":", 1)[1]
    with pytest.raises(ConfigurationError, match=f"port {port} is refused in production; webhooks may only use "
                                                 "ports 80 and 443"):
        send({"url": f"{receiver.url}/hooks/x"})
    with pytest.raises(ConfigurationError, match=f"port {port} is refused"):
        send({})  # the connection's URL is held to the same rule
    assert receiver.requests == []


def test_a_bad_secret_or_connection_sends_nothing(aws: None, receiver: Receiver) -> None:
    connection("hook", secret="not-alphanumeric!")
    with pytest.raises(ConfigurationError, match="12-50 letters and digits"):
        send({"url": f"{receiver.url}/hooks/x"})
    billflow.aws.client("secretsmanager").create_secret(
        Name="billflow/test/acme/connection/stripe-main", SecretString=json.dumps({"type": "stripe"}))
    with pytest.raises(ConfigurationError, match="'stripe-main' is stripe, not a webhook"):
        send({"url": f"{receiver.url}/hooks/x"}, connection_name="stripe-main")
    with pytest.raises(ConfigurationError, match="has no connection 'missing'"):
        send({"url": f"{receiver.url}/hooks/x"}, connection_name="missing")
    assert receiver.requests == []


# --- billflow's own signed webhook for document actions (connectors/webhook.py) -----------------------
def test_document_webhooks_keep_billflows_signature_and_the_port_rule(
    aws: None, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from billflow.connectors.base import SendContext
    from billflow.connectors.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookConnector, signature
    from billflow.storage.secrets import Connection

    receiver.signature_ok = lambda req: True  # type: ignore[method-assign]  # billflow's scheme, checked below
    hook = Connection(name="hook", type="webhook",
                      settings={"type": "webhook", "url": f"{receiver.url}/hooks/documents", "secret": "s3cret"})
    context = SendContext(tenant="acme", idempotency_key="acme:run:0")
    result = WebhookConnector().send_payload({"type": "invoice"}, hook, context)
    [req] = receiver.requests
    assert req.headers[SIGNATURE_HEADER.lower()] == signature("s3cret", req.headers[TIMESTAMP_HEADER.lower()], req.body)
    assert result.external_id == "delivery-1"
    monkeypatch.setenv("STAGE", "prod")
    billflow.settings.get_settings.cache_clear()
    with pytest.raises(ConfigurationError, match="is refused in production"):
        WebhookConnector().send_payload({"type": "invoice"}, hook, context)
    assert len(receiver.requests) == 1
