"""The template's HTTP API on localhost: every HttpApi route, API Gateway payload format 2.0, served by uvicorn.

HTTP itself (parsing, keep-alive, chunked bodies, malformed requests) is uvicorn's and h11's. This module turns
requests into the event an HTTP API hands its Lambda integration (version 2.0), runs the function in-process
and reads its answer with 2.0 semantics (a dict with statusCode is a response; anything else is a 200 JSON
body). It answers as API Gateway does where clients can tell: an unknown route or method is 404
{"message":"Not Found"}, a malformed request (a Content-Length that is not a number...) 400 JSON, a body over
the 10 MB payload limit 413 before it is read, a crashed function 500 {"message":"Internal Server Error"}.
`POST /_local/noop` goes through the same request-to-event and invocation path with a handler that does
nothing, so a benchmark can tell the cost of this plumbing from the cost of the ingest itself.

Everything shares one interpreter: the event loop reads requests, and functions run on a small thread pool,
answered in arrival order a couple at a time (Turns) rather than all at once against each other for the GIL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import re
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from billflow_local.lambdas import request_id as random_request_id
from billflow_local.template import ACCOUNT_ID, Template

MAX_BODY_BYTES = 10 * 1024 * 1024  # HTTP API's payload limit
TURN_SLOTS = 2  # requests answered at once (see Turns); two: one slow handler does not stop the queue
STUCK_TURN_SECONDS = 5.0  # when no turn ended for this long, waiting requests go ahead (see Turns)
HANDLER_THREADS = 8  # functions run here; more than TURN_SLOTS, so a stuck turn does not stop the rest
HEALTH_PATH = "/_local/health"
NOOP_PATH = "/_local/noop"

Invoke = Callable[..., Any]  # (function, event, handler=None) -> result; raises what the handler raises
Headers = list[tuple[str, str]]
_JSON: Headers = [("Content-Type", "application/json")]
_CLOSE: Headers = [*_JSON, ("Connection", "close")]


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
        console_token: str | None = None,
    ) -> None:
        self.routes = routes_from_template(template)
        # The console's token (see _token_refusal); None: admin routes open, as the in-process tests use them.
        self.console_token = console_token
        self.idle = idle
        self.invoke = invoke
        self.host = host
        self.port = port
        self.echo = echo
        apis = list(template.resources_of_type("AWS::Serverless::HttpApi"))
        self.api_id = template.ref(apis[0]) if apis else "local"
        self.noop_function = self.routes[0].function if self.routes else None
        self.in_flight = 0
        self.quiet = threading.Event()  # set while no request is in flight: background work waits on it
        self.quiet.set()
        self.last_request_at = 0.0  # time.monotonic() when the latest request started
        self.turns = Turns(TURN_SLOTS, STUCK_TURN_SECONDS)
        self.requests_served = 0
        self._count_lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host  # noqa: S104 - display only
        return f"http://{host}:{self.port}"

    def bind(self) -> socket.socket:
        """The listening socket (OSError when the port is taken): taken before anything else starts."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(1024)
        except OSError:
            sock.close()
            raise
        sock.set_inheritable(True)
        return sock

    def start(self, sock: socket.socket | None = None) -> None:
        sock = sock or self.bind()
        self.port = sock.getsockname()[1]  # the real one when port 0 was asked for
        config = uvicorn.Config(self._asgi, http=_JsonErrorsH11, interface="asgi3", proxy_headers=False,
                                lifespan="off", log_config=None,
                                log_level="critical", access_log=False, server_header=False,
                                timeout_keep_alive=75, h11_max_incomplete_event_size=64 * 1024)
        self._server = uvicorn.Server(config)
        self._pool = ThreadPoolExecutor(HANDLER_THREADS, thread_name_prefix="billflow-local-api")
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True,
                                        name="billflow-local-http")
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        if not self._server.started:
            self.stop()
            raise OSError(f"the HTTP server did not start on {self.host}:{self.port}")
        self._socket = sock  # uvicorn serves this one: closed when the server stops

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes:
            found = route.pattern.match(path)
            if found and route.method in (method, "ANY"):
                return route, {k: unquote(v) for k, v in found.groupdict().items()}
        return None

    def _say(self, line: str) -> None:
        if self.echo is not None:
            self.echo(line)

    # ------------------------------------------------------------------------------------- ASGI
    async def _asgi(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return
        started = self.last_request_at = time.monotonic()
        with self._count_lock:
            self.in_flight += 1
            if self.in_flight == 1:
                self.quiet.clear()
        request = _Request.of(scope)
        status = 500
        try:
            refused = _refusal(request)
            if refused is not None:
                status = await _respond(send, request, *refused)
                return
            body = await _read_body(receive)
            if body is None:
                status = await _respond(send, request, 413, _CLOSE, b'{"message":"Request Entity Too Large"}')
                return
            request.body = body
            assert self._pool is not None
            answer = await asyncio.get_running_loop().run_in_executor(self._pool, self._answer_in_turn, request)
            status = await _respond(send, request, *answer)
        finally:
            with self._count_lock:
                self.in_flight -= 1
                self.requests_served += 1
                if self.in_flight == 0:
                    self.quiet.set()
            if not request.path.startswith("/_local/"):
                elapsed = (time.monotonic() - started) * 1000
                self._say(f"[api] {request.method} {request.path} → {status} ({elapsed:.0f} ms)")

    def _answer_in_turn(self, request: _Request) -> tuple[int, Headers, bytes]:
        with self.turns.turn():
            return self._answer(request)

    def _answer(self, request: _Request) -> tuple[int, Headers, bytes]:
        if request.path == HEALTH_PATH and request.method == "GET":
            doc: dict[str, Any] = {"status": "ok", "routes": [r.route_key for r in self.routes]}
            if self.idle is not None:  # nothing queued or running: lets a benchmark separate its phases
                doc["idle"] = self.idle()
            return 200, _JSON, json.dumps(doc).encode()
        if request.path == NOOP_PATH and request.method == "POST" and self.noop_function:
            route = Route("POST", NOOP_PATH, self.noop_function, False, re.compile(re.escape(NOOP_PATH)))
            return self._invoke(route, self._event(request, route, {}), _noop_handler)
        found = self.match(request.method, request.path)
        if found is None:  # API Gateway: an unknown route, or a method no route has, is 404
            return 404, _JSON, b'{"message":"Not Found"}'
        route, params = found
        refused = self._token_refusal(route, request)
        if refused is not None:
            return refused
        return self._invoke(route, self._event(request, route, params), None)

    # ------------------------------------------------------------------------------------- console token
    def _token_refusal(self, route: Route, request: _Request) -> tuple[int, Headers, bytes] | None:
        """Where AWS asks for IAM or a Cognito JWT, the local API asks for the token printed at start, so
        another local user, or a web page in this machine's browser (which may POST to localhost without
        CORS), cannot drive the admin API. Webhooks (signed by the CRM) and the console's static files
        (no data) stay open."""
        if self.console_token is None or not (route.iam_auth or route.path.startswith("/admin/")):
            return None
        scheme, _, given = (request.header("authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.console_token.encode()):
            return None
        body = {"error": "Unauthorized",
                "message": "send the local API's token (printed at start) as 'Authorization: Bearer <token>'"}
        return 401, [*_JSON, ("WWW-Authenticate", 'Bearer realm="billflow-local"')], json.dumps(body).encode()

    def _invoke(self, route: Route, event: dict[str, Any], handler: Any) -> tuple[int, Headers, bytes]:
        request_id = event["requestContext"]["requestId"]
        try:
            result = self.invoke(route.function, event, handler=handler)
            status, headers, payload = _http_response(result)
        except Exception as exc:  # API Gateway hides a failed integration behind a plain 500
            lines = traceback.format_exception(exc)
            self._say(f"[api] {route.function} crashed on {route.route_key}: "
                      f"{type(exc).__name__}: {exc}\n{''.join(lines).rstrip()}")
            status, headers, payload = 500, _JSON, b'{"message":"Internal Server Error"}'
        return status, [*headers, ("Apigw-Requestid", request_id)], payload

    def _event(self, request: _Request, route: Route, params: dict[str, str]) -> dict[str, Any]:
        """The HTTP API (payload format 2.0) event for this request."""
        headers: dict[str, str] = {}
        cookies: list[str] = []
        query, body = request.query, request.body
        for name, value in request.headers:
            key = name.lower()
            if key == "cookie":
                cookies.extend(c.strip() for c in value.split(";") if c.strip())
                continue
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        client_ip = request.client_ip
        headers.setdefault("x-forwarded-for", client_ip)
        headers.setdefault("x-forwarded-port", str(self.port))
        headers.setdefault("x-forwarded-proto", "http")
        domain = headers.get("host") or f"{self.host}:{self.port}"
        now = datetime.now(UTC)
        request_id = random_request_id().replace("-", "")[:16]
        route_key = route.route_key
        context: dict[str, Any] = {
            "accountId": ACCOUNT_ID,
            "apiId": self.api_id,
            "domainName": domain,
            "domainPrefix": domain.split(".")[0].split(":")[0],
            "http": {
                "method": request.method,
                "path": request.path,
                "protocol": request.protocol,
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
            "rawPath": request.path,
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



@dataclass
class _Request:
    method: str
    path: str  # as sent (still percent-encoded), as API Gateway's rawPath
    query: str
    protocol: str
    headers: Headers  # names as sent, in arrival order
    client_ip: str
    body: bytes = b""

    @classmethod
    def of(cls, scope: dict[str, Any]) -> _Request:
        raw = scope.get("raw_path") or scope["path"].encode()
        client = scope.get("client") or ("127.0.0.1", 0)
        return cls(method=scope["method"], path=raw.decode("latin-1") or "/",
                   query=scope.get("query_string", b"").decode("latin-1"),
                   protocol=f"HTTP/{scope.get('http_version', '1.1')}",
                   headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
                   client_ip=str(client[0]))

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


def _refusal(request: _Request) -> tuple[int, Headers, bytes] | None:
    """What API Gateway answers before the body is read: a declared length over the limit is 413 (the body is
    not read: the connection closes after the answer)."""
    length = request.header("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        return 413, _CLOSE, b'{"message":"Request Entity Too Large"}'
    return None


async def _read_body(receive: Callable[..., Any]) -> bytes | None:
    """The whole body, or None once it passes the limit (a chunked body has no length to check first)."""
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)  # the client went away
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(send: Callable[..., Any], request: _Request, status: int, headers: Headers, payload: bytes) -> int:
    raw = [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in headers
           if k.lower() not in ("content-length", "transfer-encoding")]
    raw.append((b"content-length", str(len(payload)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": b"" if request.method == "HEAD" else payload})
    return status


class _JsonErrorsH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, answering a request it cannot parse (a Content-Length that is negative or
    not a number, a malformed request line or header) with API Gateway's 400 JSON instead of plain text."""

    def send_400_response(self, msg: str) -> None:
        body = b'{"message":"Bad Request"}'
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        try:
            self.transport.write(self.conn.send(h11.Response(status_code=400, headers=headers, reason=b"Bad Request")))
            self.transport.write(self.conn.send(h11.Data(data=body)))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:  # a response had already begun: nothing more can be said
            pass
        self.transport.close()


class _Ticket:
    """A place in the queue for a turn: its holder waits on the baton, which is released to hand it the turn."""

    __slots__ = ("baton", "queued")

    def __init__(self) -> None:
        self.baton = threading.Lock()
        self.baton.acquire()
        self.queued = False  # in the queue (not only watched for a request still to come)


class Turns:
    """Requests are answered `slots` at a time, in the order they arrived.

    Under the GIL, threads answering requests at the same time do not share the interpreter evenly: each
    hand-over of the GIL goes to whichever waiting thread the OS wakes, so under load some requests lose
    turn after turn (a long latency tail, longest for the requests with the most work). A few at a time,
    in arrival order, the same work takes about the same total time and the waits even out (under 50
    concurrent clients: p99 a half to a third, p50 longer). Bus deliveries take turns too. If no turn has
    ended for `stuck_seconds` (a handler waiting on the network), the waiting ones stop waiting.
    """

    def __init__(self, slots: int, stuck_seconds: float) -> None:
        self._lock = threading.Lock()
        self._waiting: deque[_Ticket] = deque()
        self._free = slots
        self._moved_at = 0.0  # time.monotonic() when a turn last began or ended
        self._stuck_seconds = stuck_seconds

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def enter(self) -> bool:
        """Wait for this request's turn. True: it has a turn, which leave() hands on."""
        ticket = _Ticket()
        self.join(ticket)
        return self.wait(ticket)

    def join(self, ticket: _Ticket) -> None:
        """Put a ticket in the queue (or give it a free turn at once)."""
        with self._lock:
            if self._free > 0 and not self._waiting:
                self._free -= 1
                self._moved_at = time.monotonic()
                ticket.baton.release()
                return
            ticket.queued = True
            self._waiting.append(ticket)

    def wait(self, ticket: _Ticket) -> bool:
        """Wait until the ticket has its turn (True), or the turns are stuck (False: go ahead without one).
        A ticket not yet joined (a connection waiting for its next request) waits as long as it takes."""
        while not ticket.baton.acquire(timeout=self._stuck_seconds / (4 if ticket.queued else 1)):
            with self._lock:
                if not ticket.queued:
                    continue  # no request yet: an idle connection
                if ticket not in self._waiting:
                    break  # handed a turn just as the wait timed out: the baton is released
                if time.monotonic() - self._moved_at > self._stuck_seconds:
                    self._waiting.remove(ticket)
                    return False
        else:
            return True  # a leaving request handed its turn over
        ticket.baton.acquire()
        return True

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        held = self.enter()
        try:
            yield
        finally:
            self.leave(held)

    def leave(self, turn: bool) -> None:
        if not turn:
            return
        with self._lock:
            self._moved_at = time.monotonic()
            if self._waiting:
                self._waiting.popleft().baton.release()  # straight to the longest waiting
            else:
                self._free += 1


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
