"""The template's HTTP API on localhost: every HttpApi route, API Gateway payload format 2.0.

Requests become the event an HTTP API hands its Lambda integration (version 2.0) and the function runs
in-process; its answer is read with 2.0 semantics (a dict with statusCode is a response; anything else is a
200 JSON body). An unknown route is API Gateway's 404 {"message": "Not Found"}, a crash its 500.
`POST /_local/noop` goes through the same request-to-event and invocation path with a handler that does
nothing, so a benchmark can tell the cost of this plumbing from the cost of the ingest itself.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from billflow_local.template import ACCOUNT_ID, Template

MAX_BODY_BYTES = 10 * 1024 * 1024  # HTTP API's payload limit
HEALTH_PATH = "/_local/health"
NOOP_PATH = "/_local/noop"

Invoke = Callable[..., Any]  # (function, event, handler=None) -> result; raises what the handler raises


@dataclass(frozen=True)
class Route:
    method: str  # upper case, or ANY
    path: str  # /webhooks/{tenant}/{source}
    function: str  # logical id
    iam_auth: bool
    pattern: re.Pattern[str]

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def specificity(self) -> tuple[int, int, int]:
        """API Gateway prefers literal segments, then fewer (greedy) parameters, then a named method."""
        greedy = self.path.count("+}")
        params = self.path.count("{")
        return (greedy, params, 1 if self.method == "ANY" else 0)


def _compile(path: str) -> re.Pattern[str]:
    parts = []
    for segment in path.strip("/").split("/"):
        name = re.fullmatch(r"\{([A-Za-z0-9_]+)(\+)?\}", segment)
        if name and name.group(2):
            parts.append(f"(?P<{name.group(1)}>.+)")
        elif name:
            parts.append(f"(?P<{name.group(1)}>[^/]+)")
        else:
            parts.append(re.escape(segment))
    return re.compile("^/" + "/".join(parts) + "/?$")


def routes_from_template(template: Template) -> list[Route]:
    routes = []
    for logical_id, _ in template.iter_functions():
        for props in template.function_events(logical_id, "HttpApi").values():
            path = str(template.resolve(props.get("Path", "$default")))
            method = str(template.resolve(props.get("Method", "ANY"))).upper()
            if path == "$default":
                path, method = "/{proxy+}", "ANY"
            authorizer = ((props.get("Auth") or {}).get("Authorizer")) or ""
            routes.append(Route(method, path, logical_id, authorizer == "AWS_IAM", _compile(path)))
    return sorted(routes, key=lambda r: r.specificity)


def _noop_handler(event: Any, context: Any) -> dict[str, Any]:
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": '{"ok":true}'}


class LocalApiServer:
    def __init__(
        self, template: Template, invoke: Invoke, *, host: str = "127.0.0.1", port: int = 3000,
        echo: Callable[[str], None] | None = print, idle: Callable[[], bool] | None = None,
    ) -> None:
        self.routes = routes_from_template(template)
        self.idle = idle
        self.invoke = invoke
        self.host = host
        self.port = port
        self.echo = echo
        apis = list(template.resources_of_type("AWS::Serverless::HttpApi"))
        self.api_id = template.ref(apis[0]) if apis else "local"
        self.noop_function = self.routes[0].function if self.routes else None
        self.in_flight = 0
        self.requests_served = 0
        self._count_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host  # noqa: S104 - display only
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        server = self

        class Handler(_RequestHandler):
            api = server

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

        self._server = Server((self.host, self.port), Handler)
        self.port = self._server.server_address[1]  # the real one when port 0 was asked for
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True, name="billflow-local-api")
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes:
            found = route.pattern.match(path)
            if found and route.method in (method, "ANY"):
                return route, {k: unquote(v) for k, v in found.groupdict().items()}
        return None

    def _say(self, line: str) -> None:
        if self.echo is not None:
            self.echo(line)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries Content-Length
    # Headers and body leave in one segment (wfile is buffered, flushed after each request), without
    # Nagle: else a client's delayed ACK adds 40 ms to every answer.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    server_version = "billflow-local"
    api: LocalApiServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one progress line per request is echoed instead

    def _serve(self) -> None:
        api = self.api
        with api._count_lock:
            api.in_flight += 1
        started = time.perf_counter()
        status = 500
        try:
            status = self._answer()
        finally:
            with api._count_lock:
                api.in_flight -= 1
                api.requests_served += 1
        path = urlsplit(self.path).path
        if not path.startswith("/_local/"):
            elapsed = (time.perf_counter() - started) * 1000
            api._say(f"[api] {self.command} {path} → {status} ({elapsed:.0f} ms)")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    def _answer(self) -> int:
        api = self.api
        try:
            body = self._read_body()
        except _TooLarge:
            self.close_connection = True
            return self._send(413, _JSON, b'{"message":"Request Entity Too Large"}')
        parts = urlsplit(self.path)
        path = parts.path or "/"
        if path == HEALTH_PATH and self.command == "GET":
            doc: dict[str, Any] = {"status": "ok", "routes": [r.route_key for r in api.routes]}
            if api.idle is not None:  # nothing queued or running: lets a benchmark separate its phases
                doc["idle"] = api.idle()
            return self._send(200, _JSON, json.dumps(doc).encode())
        if path == NOOP_PATH and self.command == "POST" and api.noop_function:
            route = Route("POST", NOOP_PATH, api.noop_function, False, re.compile(re.escape(NOOP_PATH)))
            event = self._event(route, {}, parts.query, body)
            return self._invoke(route, event, _noop_handler)
        found = api.match(self.command, path)
        if found is None:
            return self._send(404, _JSON, b'{"message":"Not Found"}')
        route, params = found
        return self._invoke(route, self._event(route, params, parts.query, body), None)

    def _invoke(self, route: Route, event: dict[str, Any], handler: Any) -> int:
        request_id = event["requestContext"]["requestId"]
        try:
            result = self.api.invoke(route.function, event, handler=handler)
            status, headers, payload = _http_response(result)
        except Exception as exc:  # API Gateway hides a failed integration behind a plain 500
            lines = traceback.format_exception(exc)
            self.api._say(f"[api] {route.function} crashed on {route.route_key}: "
                          f"{type(exc).__name__}: {exc}\n{''.join(lines).rstrip()}")
            status, headers, payload = 500, _JSON, b'{"message":"Internal Server Error"}'
        return self._send(status, [*headers, ("Apigw-Requestid", request_id)], payload)

    def _event(self, route: Route, params: dict[str, str], query: str, body: bytes) -> dict[str, Any]:
        """The HTTP API (payload format 2.0) event for this request."""
        headers: dict[str, str] = {}
        cookies: list[str] = []
        for name, value in self.headers.items():
            key = name.lower()
            if key == "cookie":
                cookies.extend(c.strip() for c in value.split(";") if c.strip())
                continue
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        client_ip = self.client_address[0]
        headers.setdefault("x-forwarded-for", client_ip)
        headers.setdefault("x-forwarded-port", str(self.api.port))
        headers.setdefault("x-forwarded-proto", "http")
        domain = headers.get("host") or f"{self.api.host}:{self.api.port}"
        now = datetime.now(UTC)
        request_id = uuid.uuid4().hex[:16]
        route_key = route.route_key
        context: dict[str, Any] = {
            "accountId": ACCOUNT_ID,
            "apiId": self.api.api_id,
            "domainName": domain,
            "domainPrefix": domain.split(".")[0].split(":")[0],
            "http": {
                "method": self.command,
                "path": urlsplit(self.path).path,
                "protocol": self.request_version,
                "sourceIp": client_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": route_key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        }
        if route.iam_auth:
            # Locally nobody signs admin calls (the server listens on localhost only); the shape is AWS's.
            context["authorizer"] = {"iam": {
                "accessKey": "LOCAL", "accountId": ACCOUNT_ID, "callerId": "LOCAL",
                "cognitoIdentity": None, "principalOrgId": None,
                "userArn": f"arn:aws:iam::{ACCOUNT_ID}:user/local", "userId": "LOCAL",
            }}
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": route_key,
            "rawPath": urlsplit(self.path).path,
            "rawQueryString": query,
            "headers": headers,
            "requestContext": context,
            "isBase64Encoded": False,
        }
        if cookies:
            event["cookies"] = cookies
        if query:
            values: dict[str, str] = {}
            for key, value in parse_qsl(query, keep_blank_values=True):
                values[key] = f"{values[key]},{value}" if key in values else value
            event["queryStringParameters"] = values
        if params:
            event["pathParameters"] = params
        if body:
            try:
                event["body"] = body.decode("utf-8")
            except UnicodeDecodeError:
                event["body"] = base64.b64encode(body).decode()
                event["isBase64Encoded"] = True
        return event

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                total += size
                if total > MAX_BODY_BYTES:
                    raise _TooLarge
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise _TooLarge
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> int:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        return status


class _TooLarge(Exception):
    pass


_JSON = [("Content-Type", "application/json")]


def _http_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """A Lambda result read as HTTP API payload format 2.0 reads it."""
    if isinstance(result, dict) and "statusCode" in result:
        headers = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
        if not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("Content-Type", "application/json"))
        headers.extend(("Set-Cookie", str(cookie)) for cookie in result.get("cookies") or [])
        body = result.get("body")
        if body is None:
            payload = b""
        elif result.get("isBase64Encoded"):
            payload = base64.b64decode(body)
        else:
            payload = (body if isinstance(body, str) else json.dumps(body)).encode()
        return int(result["statusCode"]), headers, payload
    body = result if isinstance(result, str) else json.dumps(result)
    return 200, _JSON, body.encode()
