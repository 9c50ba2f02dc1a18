"""The template's HTTP API on localhost: every HttpApi route, API Gateway payload format 2.0.

Requests become the event an HTTP API hands its Lambda integration (version 2.0) and the function runs
in-process; its answer is read with 2.0 semantics (a dict with statusCode is a response; anything else is a
200 JSON body). An unknown route is API Gateway's 404 {"message": "Not Found"}, a crash its 500.
`POST /_local/noop` goes through the same request-to-event and invocation path with a handler that does
nothing, so a benchmark can tell the cost of this plumbing from the cost of the ingest itself.

Everything shares one interpreter, so the server is built for that: idle threads wait in accept()
themselves (_Listener), requests are answered in arrival order a couple at a time (Turns) rather than all
at once against each other for the GIL, and headers are parsed without the email package.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import selectors
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from billflow_local.lambdas import request_id as random_request_id
from billflow_local.template import ACCOUNT_ID, Template

MAX_BODY_BYTES = 10 * 1024 * 1024  # HTTP API's payload limit
TURN_SLOTS = 2  # requests answered at once (see Turns); two: one slow handler does not stop the queue
STUCK_TURN_SECONDS = 5.0  # when no turn ended for this long, waiting requests go ahead (see Turns)
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
        self.quiet = threading.Event()  # set while no request is in flight: background work waits on it
        self.quiet.set()
        self.last_request_at = 0.0  # time.monotonic() when the latest request started
        self.turns = Turns(TURN_SLOTS, STUCK_TURN_SECONDS)
        self.requests_served = 0
        self._count_lock = threading.Lock()
        self._listener: _Listener | None = None
        self.watcher: _Watcher | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host  # noqa: S104 - display only
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        server = self

        class Handler(_RequestHandler):
            api = server

        self.watcher = _Watcher(self.turns)
        self._listener = _Listener((self.host, self.port), Handler)
        self.port = self._listener.port  # the real one when port 0 was asked for

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes:
            found = route.pattern.match(path)
            if found and route.method in (method, "ANY"):
                return route, {k: unquote(v) for k, v in found.groupdict().items()}
        return None

    def _say(self, line: str) -> None:
        if self.echo is not None:
            self.echo(line)


class _Listener:
    """The listening socket and the threads that serve it, one connection (keep-alive) per thread.

    Every idle thread waits in accept() itself, so a burst of new connections is taken up in parallel,
    one GIL hand-over each. (socketserver's single accepting thread would accept them one after another,
    each accept and each thread start waiting its turn for the GIL behind every busy handler: under
    50 concurrent clients, new connections waited hundreds of milliseconds for their first answer.)
    A helper thread keeps SPARE_THREADS threads waiting, so a thread is never started on a request's path.
    """

    SPARE_THREADS = 32
    MAX_THREADS = 1024

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self.socket = socket.create_server(address, backlog=128)
        self.port: int = self.socket.getsockname()[1]
        self.handler = handler
        self._condition = threading.Condition()
        self._idle = 0  # threads waiting in accept()
        self._threads = 0
        self._closed = False
        self._connections: set[socket.socket] = set()
        self._spawner = threading.Thread(target=self._keep_spares, daemon=True, name="billflow-local-api")
        self._spawner.start()

    def close(self) -> None:
        with self._condition:
            self._closed = True
            connections = list(self._connections)
            idle = self._idle
            self._condition.notify_all()
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)  # Linux: wakes every thread blocked in accept()
        address = self.socket.getsockname()
        for _ in range(idle):  # elsewhere, a connection each wakes them (here: refused at once)
            with contextlib.suppress(OSError), socket.create_connection(address, timeout=0.2):
                pass
        self.socket.close()
        for connection in connections:  # keep-alive connections: their threads end too
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._spawner.join(timeout=5)

    def _keep_spares(self) -> None:
        while True:
            with self._condition:
                while not self._closed and (self._idle >= self.SPARE_THREADS or self._threads >= self.MAX_THREADS):
                    self._condition.wait()
                if self._closed:
                    return
                missing = min(self.SPARE_THREADS - self._idle, self.MAX_THREADS - self._threads)
                self._threads += missing
                self._idle += missing  # counted now: they are on their way to accept()
            for _ in range(missing):
                threading.Thread(target=self._serve_connections, daemon=True, name="billflow-local-api-conn").start()

    def _serve_connections(self) -> None:
        while True:
            try:
                connection, client = self.socket.accept()
            except OSError:  # closed
                connection = None
            with self._condition:
                if connection is None or self._closed:
                    self._idle -= 1
                    self._threads -= 1
                    if connection is not None:
                        connection.close()
                    return
                self._idle -= 1
                self._connections.add(connection)
                if self._idle < self.SPARE_THREADS:
                    self._condition.notify_all()
            try:
                self.handler(connection, client, self)  # type: ignore[arg-type]  # serves until the client closes
            except Exception:  # noqa: S110 - a broken connection ends quietly, as in socketserver
                pass
            finally:
                with self._condition:
                    self._connections.discard(connection)
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_WR)
                connection.close()
            with self._condition:
                if self._closed or self._idle >= 2 * self.SPARE_THREADS:
                    self._threads -= 1
                    return
                self._idle += 1


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


class _Watcher:
    """One thread watching the keep-alive connections between requests: as soon as one has a request, the
    request joins the queue for a turn.

    A thread blocked in recv() would first have to win the GIL, against the requests being answered, just to
    join the queue: under load, in no particular order, which is the long tail Turns is there to prevent.
    """

    def __init__(self, turns: Turns) -> None:
        self._turns = turns
        self._selector = selectors.DefaultSelector()
        self._wake, self._waker = socket.socketpair()
        self._wake.setblocking(False)
        self._selector.register(self._wake, selectors.EVENT_READ)
        self._lock = threading.Lock()
        self._added: list[tuple[socket.socket, _Ticket]] = []
        self._closed = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="billflow-local-api-watch")
        self._thread.start()

    def watch(self, connection: socket.socket, ticket: _Ticket) -> None:
        """The ticket joins the queue once the connection has something to read (a request, or its end)."""
        with self._lock:
            if not self._closed:
                self._added.append((connection, ticket))
                self._waker.send(b"\0")
                return
        self._turns.join(ticket)  # stopping: let it find out by reading

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._waker.send(b"\0")
        self._thread.join(timeout=5)
        self._waker.close()

    def _run(self) -> None:
        while True:
            ready: list[_Ticket] = []
            for key, _ in self._selector.select():
                if key.fileobj is not self._wake:
                    self._selector.unregister(key.fileobj)
                    ready.append(key.data)
                    continue
                with contextlib.suppress(BlockingIOError):
                    while self._wake.recv(4096):
                        pass
                with self._lock:
                    added, self._added, closed = self._added, [], self._closed
                for connection, ticket in added:
                    try:
                        self._selector.register(connection, selectors.EVENT_READ, ticket)
                    except (ValueError, OSError):  # already closed: its thread finds out by reading
                        ready.append(ticket)
                if closed:
                    for watched in list(self._selector.get_map().values()):
                        if watched.fileobj is not self._wake:
                            self._selector.unregister(watched.fileobj)
                            ready.append(watched.data)
            for ticket in ready:
                self._turns.join(ticket)
            if self._closed and not self._added:
                self._selector.close()
                self._wake.close()
                return


class _SocketReader:
    """The reading side of a connection, as BaseHTTPRequestHandler reads it (readline, read), knowing what
    it already received: a request already here needs no watching (see _Watcher)."""

    def __init__(self, connection: socket.socket) -> None:
        self._connection = connection
        self._buffer = bytearray()
        self.closed = False

    def buffered(self) -> bool:
        return bool(self._buffer)

    def _receive(self) -> bool:
        chunk = self._connection.recv(65536)
        self._buffer += chunk
        return bool(chunk)

    def readline(self, limit: int = -1) -> bytes:
        """Up to and including the next newline, at most `limit` bytes; less at the end of the stream."""
        searched = 0
        while True:
            end = self._buffer.find(b"\n", searched)
            if end >= 0:
                size = end + 1
                break
            if 0 <= limit <= len(self._buffer):
                size = limit
                break
            searched = len(self._buffer)
            if not self._receive():
                size = len(self._buffer)
                break
        if 0 <= limit < size:
            size = limit
        line = bytes(self._buffer[:size])
        del self._buffer[:size]
        return line

    def read(self, size: int = -1) -> bytes:
        """`size` bytes (all until the end of the stream when negative); less at the end of the stream."""
        while (size < 0 or len(self._buffer) < size) and self._receive():
            pass
        size = len(self._buffer) if size < 0 else min(size, len(self._buffer))
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def close(self) -> None:
        self.closed = True


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries Content-Length
    # Headers and body leave in one segment (wfile is buffered, flushed after each request), without
    # Nagle: else a client's delayed ACK adds 40 ms to every answer.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    server_version = "billflow-local"
    api: LocalApiServer
    raw_requestline: bytes  # set by handle_one_request

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one progress line per request is echoed instead

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        self.rfile = _SocketReader(self.connection)  # type: ignore[assignment]

    def handle_one_request(self) -> None:
        """BaseHTTPRequestHandler's, with the request read and answered in its turn (Turns), taken when
        it arrives (_Watcher); the answer is sent after."""
        api = self.api
        ticket = _Ticket()
        watcher = api.watcher
        if watcher is None or self.rfile.buffered():  # type: ignore[attr-defined]  # stopping; pipelined
            api.turns.join(ticket)
        else:
            watcher.watch(self.connection, ticket)
        turn = api.turns.wait(ticket)
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.requestline = self.request_version = self.command = ""
                self.send_error(414)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            started = api.last_request_at = time.monotonic()
            with api._count_lock:
                api.in_flight += 1
                if api.in_flight == 1:
                    api.quiet.clear()
            self._status: int | None = None  # set by _serve
            try:
                try:
                    if not self.parse_request():
                        return  # the error answer is written
                    handle = getattr(self, f"do_{self.command}", None)
                    if handle is None:
                        self.send_error(501, f"Unsupported method ({self.command!r})")
                        return
                    handle()
                finally:
                    api.turns.leave(turn)
                    turn = False
                    self.wfile.flush()  # the answer leaves now: before the echo, before background work
            finally:
                self._answered(started)
        except TimeoutError as exc:
            self.log_error("Request timed out: %r", exc)
            self.close_connection = True
        finally:
            api.turns.leave(turn)  # when the request never got as far as being answered

    def parse_request(self) -> bool:
        """BaseHTTPRequestHandler.parse_request with the same rules and answers, but headers read straight
        into _Headers: http.client.parse_headers goes through the email package, ~40 µs a request."""
        self.command = None  # type: ignore[assignment]  # set in case of error on the first line
        self.request_version = self.default_request_version
        self.close_connection = True
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = requestline
        words = requestline.split()
        if not words:
            return False
        if len(words) >= 3:  # enough to tell the protocol version
            version = words[-1]
            number = version[5:].split(".") if version.startswith("HTTP/") else []
            if len(number) != 2 or not all(part.isdigit() and len(part) <= 10 for part in number):
                self.send_error(400, f"Bad request version ({version!r})")
                return False
            major, minor = int(number[0]), int(number[1])
            if (major, minor) >= (2, 0):
                self.send_error(505, f"Invalid HTTP version ({version[5:]})")
                return False
            if (major, minor) >= (1, 1):
                self.close_connection = False
            self.request_version = version
        if not 2 <= len(words) <= 3:
            self.send_error(400, f"Bad request syntax ({requestline!r})")
            return False
        command, path = words[:2]
        if len(words) == 2:
            self.close_connection = True
            if command != "GET":
                self.send_error(400, f"Bad HTTP/0.9 request type ({command!r})")
                return False
        self.command, self.path = command, path
        if self.path.startswith("//"):  # as the standard library: not a network path
            self.path = "/" + self.path.lstrip("/")
        lines: list[bytes] = []
        while True:
            line = self.rfile.readline(_MAX_HEADER_LINE + 1)
            if len(line) > _MAX_HEADER_LINE:
                self.send_error(431, "Line too long", "header line")
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            lines.append(line)
            if len(lines) > _MAX_HEADERS:
                self.send_error(431, "Too many headers", f"got more than {_MAX_HEADERS} headers")
                return False
        self.headers = _Headers(lines)  # type: ignore[assignment]
        connection = (self.headers.get("Connection") or "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive":
            self.close_connection = False
        expect = (self.headers.get("Expect") or "").lower()
        if expect == "100-continue" and self.request_version >= "HTTP/1.1":
            return self.handle_expect_100()
        return True

    def _serve(self) -> None:
        self._status = 500  # until answered
        try:
            body = self._read_body()
        except _TooLarge:
            self.close_connection = True
            self._status = self._send(413, _JSON, b'{"message":"Request Entity Too Large"}')
        else:
            self._status = self._answer(body)

    def _answered(self, started: float) -> None:
        """Once the answer is sent: the request is no longer in flight, and its progress line is echoed."""
        api = self.api
        with api._count_lock:
            api.in_flight -= 1
            api.requests_served += 1
            if api.in_flight == 0:
                api.quiet.set()
        if self._status is None:  # not a request a route was asked for (malformed, unknown method)
            return
        path = urlsplit(self.path).path
        if not path.startswith("/_local/"):
            elapsed = (time.monotonic() - started) * 1000
            api._say(f"[api] {self.command} {path} → {self._status} ({elapsed:.0f} ms)")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    def _answer(self, body: bytes) -> int:
        api = self.api
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
        request_id = random_request_id().replace("-", "")[:16]
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


_MAX_HEADER_LINE = 65536  # http.client's limits
_MAX_HEADERS = 100


class _Headers:
    """A request's headers in arrival order; get() and [] are case-insensitive and give the first value,
    as http.client's HTTPMessage does (a folded line continues the header before it)."""

    def __init__(self, lines: list[bytes]) -> None:
        self._items: list[tuple[str, str]] = []
        for raw in lines:
            line = raw.decode("iso-8859-1").rstrip("\r\n")
            if line[:1] in (" ", "\t") and self._items:
                name, value = self._items[-1]
                self._items[-1] = (name, f"{value} {line.strip()}")
                continue
            name, colon, value = line.partition(":")
            if colon and name and name == name.strip():
                self._items.append((name, value.strip(" \t")))
        self._first: dict[str, str] = {}
        for name, value in self._items:
            self._first.setdefault(name.lower(), value)

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._first.get(name.lower(), default)

    def __getitem__(self, name: str) -> str | None:
        return self._first.get(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def get_all(self, name: str, failobj: Any = None) -> list[str] | Any:
        found = [value for key, value in self._items if key.lower() == name.lower()]
        return found or failobj


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
