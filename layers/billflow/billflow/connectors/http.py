"""A small HTTP client on urllib (no extra dependency in the layer) that classifies failures.

Every outbound call of billflow goes through `request`: it connects only to addresses netguard allows
(resolved once, checked, then connected to), follows no redirect, and uses no proxy.

429, 5xx and network errors raise TransientError (the state machine retries, honouring Retry-After);
other 4xx raise TargetRejected with the target's own message.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from billflow.errors import TargetRejected, TransientError
from billflow.netguard import check_static_url, guarded_create_connection
from billflow.observability import tracer

DEFAULT_TIMEOUT = 10.0


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    url: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        # A redirect from a billing API is an error, not something to follow with credentials; and where it
        # points is checked too, so an internal address never shows up as a mere redirect.
        check_static_url(newurl, "redirect")
        return None


class _GuardedHTTPConnection(http.client.HTTPConnection):
    """Connects only to addresses netguard checked, from one DNS lookup."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = guarded_create_connection


class _GuardedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = guarded_create_connection  # TLS still verifies the host name


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_GuardedHTTPConnection, req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_GuardedHTTPSConnection, req)


# No proxy from the environment: the address checked must be the target's own.
_opener = urllib.request.build_opener(
    urllib.request.ProxyHandler({}), _NoRedirect, _GuardedHTTPHandler, _GuardedHTTPSHandler)


def request(
    method: str, url: str, *, headers: dict[str, str] | None = None, body: bytes | None = None,
    timeout: float = DEFAULT_TIMEOUT, target: str = "target", raise_for_status: bool = True,
) -> HttpResponse:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme
    if scheme not in ("http", "https"):
        raise TargetRejected(f"{target}: refusing to call a {scheme or 'relative'} URL")
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})  # noqa: S310
    # One X-Ray subsegment per call: a slow CRM, target or token endpoint shows by name, not inside the
    # function's one segment. Host and path only: a query string may carry a key.
    with tracer.provider.in_subsegment(f"## {target}") as subsegment:
        subsegment.put_annotation("target", target)
        subsegment.put_metadata("request", {"method": method, "host": parts.hostname, "path": parts.path})
        try:
            with _opener.open(req, timeout=timeout) as resp:
                answer = HttpResponse(resp.status, _lower(resp.headers.items()), resp.read(), url)
        except urllib.error.HTTPError as err:
            answer = HttpResponse(err.code, _lower(err.headers.items()), err.read(), url)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            subsegment.put_annotation("outcome", "unreachable")
            raise TransientError(f"{target} unreachable: {getattr(err, 'reason', err)}") from None
        subsegment.put_annotation("status", str(answer.status))
    if raise_for_status:
        raise_for(answer, target)
    return answer


def raise_for(answer: HttpResponse, target: str) -> None:
    if answer.status < 300:
        return
    if answer.status < 400:
        # Never followed: a redirect would carry the credentials somewhere the connection did not name.
        raise TargetRejected(f"{target} answered a redirect ({answer.status}); billflow does not follow redirects",
                             status=answer.status)
    message = error_message(answer)
    # 409: another request with the same idempotency key is still in progress (Stripe documents it as "the
    # request conflicts with another request (perhaps due to using the same idempotent key)"; its SDKs retry it).
    if answer.status in (409, 429) or answer.status >= 500:
        raise TransientError(
            f"{target} answered {answer.status}: {message}",
            retry_after_seconds=retry_after(answer.headers),
            status=answer.status,
        )
    raise TargetRejected(f"{target} answered {answer.status}: {message}", status=answer.status)


def retry_after(headers: dict[str, str]) -> float | None:
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        from datetime import UTC, datetime
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, (parsedate_to_datetime(raw) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return None


def error_message(answer: HttpResponse) -> str:
    """The target's own words: Stripe's error.message, Xero's Elements, Intuit's Fault, or the text."""
    try:
        doc = answer.json()
    except ValueError:
        return answer.body[:500].decode("utf-8", "replace")
    if isinstance(doc, dict):
        for path in (("error", "message"), ("Message",), ("message",), ("messages",), ("Fault", "Error")):
            node: Any = doc
            for key in path:
                node = node.get(key) if isinstance(node, dict) else None
            if node:
                return json.dumps(node)[:500] if not isinstance(node, str) else node[:500]
    return json.dumps(doc)[:500]


def _lower(items: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in items}
