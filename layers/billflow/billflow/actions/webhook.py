"""Call a webhook with the run's data (seed 004's Webhooks): method, query, headers, four body formats, signed.

    - type: webhook
      connection: finance-hook          (optional: url, secret, secret headers/query; see below)
      options:
        url: "https://hooks.example.com/deals?source=billflow"   (placeholders allowed; else the connection's)
        method: POST                                              (POST, PUT or DELETE)
        query: {deal: "${OPPORTUNITY.NAME}"}                      (added to the URL's own query)
        headers: {X-Team: finance}
        body_format: raw                 (default | form_data | form_urlencoded | raw)
        body: {invoice: "${INVOICE.ID}", amount: "{{ record.amount.amountMicros }}"}

Body formats: `default` sends billflow's payload (rule, transition, event with the record, earlier results,
what the lookup fetched) as application/json; `raw` sends `body` (any JSON) as application/json; `form_data`
sends `body` (a flat mapping) as multipart/form-data; `form_urlencoded` as application/x-www-form-urlencoded.
`payload:` is the older spelling of a raw body.

The connection (type webhook, in Secrets Manager) holds what must not be in a rule: `secret` (12-50 letters
and digits) signs every request by seed 004's scheme into X-Zoho-Webhook-Signature and by billflow's own
timestamped scheme into X-Billflow-Signature / X-Billflow-Timestamp (billflow.signing), so receivers written
for either verify; `signature_scheme: zoho` or `billflow` sends only one (billflow's takes any secret),
`signature_header` renames seed 004's header, `signature_encoding: base64` changes its digest's spelling.
`headers` and `query` are merged into the request (an Authorization header, an API key parameter: seed
004's "authorise with a connection"); `url` is used when the rule gives none; `timeout_seconds`.

render() builds the request from the rule and the run (stored in the execution history): it never reads
the connection, so no secret is in it. send() and preview() add the connection's values and the signature;
preview() masks every value that came from the connection and never shows the secret. In production
(STAGE=prod, or WEBHOOK_RESTRICT_PORTS=true) only ports 80 and 443 are called.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from billflow.actions.base import ActionType
from billflow.connectors import http
from billflow.connectors.webhook import check_url, reply_id, signed_headers
from billflow.errors import ConfigurationError
from billflow.models.documents import DispatchResult
from billflow.models.rules import Action
from billflow.models.run import RunState
from billflow.rules.templates import PLACEHOLDER, REFERENCE, render, text_of
from billflow.signing import (
    ZOHO_SIGNATURE_HEADER,
    Encoding,
    sign_zoho,
)
from billflow.storage.secrets import Connection, get_secret_store

MAX_PER_RULE = 1
METHODS = ("POST", "PUT", "DELETE")
BODY_FORMATS = ("default", "form_data", "form_urlencoded", "raw")
SIGNATURE_SCHEMES = ("both", "zoho", "billflow")
OPTIONS = frozenset({"url", "method", "query", "headers", "body_format", "body", "payload"})
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token
MASK = "*****"
JSON_TYPE = "application/json"


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _templated(value: Any) -> bool:
    return isinstance(value, str) and bool(PLACEHOLDER.search(value) or REFERENCE.search(value))


class WebhookAction(ActionType):
    # --- render: from the rule and the run only ------------------------------------------------------
    def render(self, action: Action, state: RunState) -> dict[str, Any]:
        options = action.options
        context = state.context()
        method = str(options.get("method") or "POST").upper()
        if method not in METHODS:
            raise ConfigurationError(f"webhook method {method}: one of {', '.join(METHODS)}")
        body_format = _body_format(options)
        url = render(options["url"], context) if options.get("url") else None
        if url is not None:
            url = str(url).strip()
            check_url(url)
        elif not action.connection:
            raise ConfigurationError("a webhook needs a url (in the rule or its connection)")
        headers = {str(k): _header_value(k, render(v, context)) for k, v in _mapping(options, "headers").items()}
        query = [[str(k), text_of(render(v, context))] for k, v in _mapping(options, "query").items()]
        body: Any
        if body_format == "default":
            body = {"rule": state.rule.id, "transition": state.transition,
                    "event": state.event.model_dump(mode="json"), "results": state.results, **state.lookup}
        elif body_format == "raw":
            body = render(options.get("body", options.get("payload")), context)
        else:
            body = [[str(k), text_of(render(v, context))] for k, v in _mapping(options, "body").items()]
        return {"method": method, "url": url, "connection": action.connection, "query": query,
                "headers": headers, "body_format": body_format, "body": body}

    # --- send and preview: add the connection, encode, sign -----------------------------------------
    def send(self, action: Action, request: dict[str, Any], state: RunState, key: str) -> DispatchResult:
        prepared = _prepare(request, _connection(action, state), key)
        answer = http.request(prepared.method, prepared.url, headers=prepared.headers, body=prepared.body,
                              timeout=prepared.timeout, target="webhook")
        return DispatchResult(status="sent", external_id=reply_id(answer) or key,
                              details={"status": answer.status, "method": prepared.method})

    def preview(self, action: Action, request: dict[str, Any], state: RunState, key: str) -> list[dict[str, Any]]:
        prepared = _prepare(request, _connection(action, state), key)
        return [{"action": action.type, "method": prepared.method, "url": prepared.shown_url,
                 "headers": prepared.shown_headers, "body": prepared.body.decode("utf-8", "replace")
                 if prepared.body is not None else None}]

    # --- checks when a rule is saved ----------------------------------------------------------------
    def check(self, action: Action) -> list[tuple[str, str]]:
        """Problems a saved rule would have (rules/validation.py): (where in the action, what)."""
        options = action.options
        problems: list[tuple[str, str]] = []
        for name in sorted(set(options) - OPTIONS):
            if name in ("secret", "secret_token", "signing_secret"):
                problems.append((f"options.{name}", "a webhook's secret does not belong in the rule (rules are "
                                 "kept in git and in the execution history): put it in the webhook's connection as "
                                 "`secret` (12-50 letters and digits) and name the connection in the action"))
            else:
                problems.append((f"options.{name}", f"unknown webhook option; known: {', '.join(sorted(OPTIONS))}"))
        if not options.get("url") and not action.connection:
            problems.append(("options.url", "a webhook needs a url (or a connection that has one)"))
        elif isinstance(options.get("url"), str) and not _templated(options["url"]):
            try:
                check_url(options["url"])
            except ConfigurationError as err:
                problems.append(("options.url", err.message))
        elif "url" in options and not isinstance(options["url"], str):
            problems.append(("options.url", "a URL"))
        method = options.get("method", "POST")
        if not isinstance(method, str) or method.upper() not in METHODS:
            problems.append(("options.method", f"one of {', '.join(METHODS)}"))
        try:
            body_format = _body_format(options)
        except ConfigurationError as err:
            problems.append(("options.body_format", err.message))
            body_format = "raw"
        if "body" in options and "payload" in options:
            problems.append(("options.payload", "give body or payload (its older name), not both"))
        if body_format == "default" and ("body" in options or "payload" in options):
            problems.append(("options.body", "the default body is billflow's payload; use body_format raw, "
                                             "form_data or form_urlencoded to send your own"))
        if body_format in ("form_data", "form_urlencoded"):
            body = options.get("body")
            if not isinstance(body, dict) or not all(_scalar(v) for v in body.values()):
                problems.append(("options.body", f"{body_format} needs body: a mapping of names to text values"))
        for name in ("query", "headers"):
            value = options.get(name)
            if value is not None and (not isinstance(value, dict) or not all(_scalar(v) for v in value.values())):
                problems.append((f"options.{name}", "a mapping of names to text values"))
        for header in (options.get("headers") or {}) if isinstance(options.get("headers"), dict) else {}:
            if not HEADER_NAME.match(str(header)):
                problems.append((f"options.headers.{header}", "not a valid header name"))
        return problems


# --- the request on the wire -----------------------------------------------------------------------
@dataclass(frozen=True)
class _Prepared:
    """One request as sent (url, headers) and as a dry run shows it (shown_*: connection values masked)."""

    method: str
    url: str
    shown_url: str
    headers: dict[str, str]
    shown_headers: dict[str, str]
    body: bytes | None
    timeout: float


def _connection(action: Action, state: RunState) -> Connection | None:
    if not action.connection:
        return None
    connection = get_secret_store().connection(state.tenant, action.connection)
    if connection.type != "webhook":
        raise ConfigurationError(f"connection {connection.name!r} is {connection.type}, not a webhook")
    return connection


def _prepare(request: dict[str, Any], connection: Connection | None, key: str) -> _Prepared:
    settings = connection.settings if connection else {}
    url = request.get("url") or (connection.require("url") if connection else None)
    if not url:
        raise ConfigurationError("a webhook needs a url (in the rule or its connection)")
    url_is_secret = not request.get("url")
    parts = check_url(url)
    # Every query pair, decoded: the URL's own, the rule's, then the connection's (secret) ones.
    own = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    secret_query = [(str(k), text_of(v)) for k, v in _mapping(settings, "query", "webhook connection").items()]
    query = [*own, *[(k, v) for k, v in request["query"]], *secret_query]
    base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    encoded = urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
    final_url = f"{base}?{encoded}" if query else base
    shown_pairs = [*own, *[(k, v) for k, v in request["query"]], *[(k, MASK) for k, _ in secret_query]]
    if url_is_secret:  # the connection's URL may carry a token in its path (Slack-style): host only
        shown_pairs = [(k, MASK) for k, _ in shown_pairs]
        shown_base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, f"/{MASK}" if parts.path.strip("/")
                                              else parts.path, "", ""))
    else:
        shown_base = base
    shown_encoded = urllib.parse.urlencode(shown_pairs, quote_via=urllib.parse.quote, safe="*")
    shown_url = f"{shown_base}?{shown_encoded}" if shown_pairs else shown_base

    body_format = request["body_format"]
    body: bytes | None
    content_type: str
    signed_pairs = list(query)
    raw_json: str | None = None
    if body_format in ("default", "raw"):
        raw_json = _json_text(request["body"])
        body, content_type = raw_json.encode("utf-8"), JSON_TYPE
    elif body_format == "form_urlencoded":
        pairs = [(k, v) for k, v in request["body"]]
        body = urllib.parse.urlencode(pairs).encode("ascii")
        content_type = "application/x-www-form-urlencoded"
        signed_pairs += pairs  # the seed signs the decoded form pairs with the query pairs
    else:  # form_data: seed 004 signs only the query pairs of a multipart request
        pairs = [(k, v) for k, v in request["body"]]
        boundary = _boundary(key, pairs)
        body = _multipart(pairs, boundary)
        content_type = f"multipart/form-data; boundary={boundary}"

    headers: dict[str, str] = {"User-Agent": "billflow-webhook", "Idempotency-Key": key}
    headers.update(request["headers"])
    secret_headers = {str(k): _header_value(k, text_of(v))
                      for k, v in _mapping(settings, "headers", "webhook connection").items()}
    headers.update(secret_headers)
    if body_format == "form_data" or not any(h.lower() == "content-type" for h in headers):
        headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        headers["Content-Type"] = content_type
    signature_headers = _signature(settings, connection, signed_pairs, raw_json, body)
    headers.update(signature_headers)
    shown_headers = {k: (MASK if k in secret_headers else v) for k, v in headers.items()}
    timeout = float(settings.get("timeout_seconds") or http.DEFAULT_TIMEOUT)
    return _Prepared(request["method"], final_url, shown_url, headers, shown_headers, body, timeout)


def _signature(settings: dict[str, Any], connection: Connection | None, pairs: list[tuple[str, str]],
               raw_json: str | None, body: bytes | None) -> dict[str, str]:
    """The signature headers: seed 004's, billflow's timestamped pair, or both (the default)."""
    secret = settings.get("secret")
    if not secret:
        return {}
    scheme = settings.get("signature_scheme") or "both"
    name = connection.name if connection else "?"
    if scheme not in SIGNATURE_SCHEMES:
        raise ConfigurationError(f"connection {name!r}: signature_scheme {scheme!r}; one of "
                                 f"{', '.join(SIGNATURE_SCHEMES)}")
    headers: dict[str, str] = {}
    if scheme in ("zoho", "both"):
        encoding: Encoding = settings.get("signature_encoding") or "hex"
        if encoding not in ("hex", "base64"):
            raise ConfigurationError(f"connection {name!r}: signature_encoding {encoding!r}; hex or base64")
        header = str(settings.get("signature_header") or ZOHO_SIGNATURE_HEADER)
        try:
            headers[header] = sign_zoho(str(secret), pairs, raw_json, encoding)
        except ConfigurationError as err:
            hint = " (or set signature_scheme: billflow to sign by billflow's scheme only)" if scheme == "both" else ""
            raise ConfigurationError(f"connection {name!r}: {err.message}{hint}") from None
    if scheme in ("billflow", "both"):
        headers.update(signed_headers(str(secret), body or b""))
    return headers


def _boundary(key: str, pairs: list[tuple[str, str]]) -> str:
    """Derived from the send key, so a retried send is byte for byte the same request."""
    seed = key
    while True:
        boundary = "billflow-" + hashlib.sha256(seed.encode()).hexdigest()[:32]
        if not any(boundary in k or boundary in v for k, v in pairs):
            return boundary
        seed += "+"


def _multipart(pairs: list[tuple[str, str]], boundary: str) -> bytes:
    out = bytearray()
    for name, value in pairs:
        quoted = name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")  # as browsers do
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{quoted}"\r\n\r\n'.encode()
        out += value.encode("utf-8") + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


# --- small helpers ---------------------------------------------------------------------------------
def _body_format(options: dict[str, Any]) -> str:
    given = options.get("body_format")
    if given is None:
        return "raw" if ("body" in options or "payload" in options) else "default"
    if given not in BODY_FORMATS:
        raise ConfigurationError(f"body_format {given!r}: one of {', '.join(BODY_FORMATS)}")
    return str(given)


def _mapping(options: dict[str, Any], name: str, owner: str = "webhook") -> dict[str, Any]:
    """A rule's (or, owner "webhook connection", a connection's) headers, query or body mapping."""
    value = options.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigurationError(f"{owner} {name}: a mapping of names to values")
    return value


def _header_value(name: Any, value: Any) -> str:
    text = text_of(value)
    if not HEADER_NAME.match(str(name)):
        raise ConfigurationError(f"webhook header {name!r} is not a valid header name")
    if "\r" in text or "\n" in text:
        raise ConfigurationError(f"webhook header {name}: a value cannot contain line breaks")
    return text


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)
