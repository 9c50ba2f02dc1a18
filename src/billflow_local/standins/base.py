"""A base for the local servers that stand in for external systems in tests.

Each fake runs a real HTTP server on 127.0.0.1 (an ephemeral port), records every request, and checks it
against the system's official contract: a request the real service would reject is answered with that
service's error shape and recorded in `violations`, so a test can assert none happened.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Response:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Route = Callable[..., Response]


class FakeServer:
    """Subclasses register routes with `self.route(method, regex, handler)`; handler(req, *groups)."""

    name = "fake"

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.violations: list[str] = []
        self._routes: list[tuple[str, re.Pattern[str], Route]] = []
        self.unavailable = False  # an outage: every request is answered 503 (and recorded), as a load balancer would
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "start() the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                req = Request(
                    self.command, parts.path, parse_qs(parts.query, keep_blank_values=True),
                    {k.lower(): v for k, v in self.headers.items()}, body,
                )
                resp = fake.dispatch(req)
                payload = b"" if resp.body is None else (
                    resp.body if isinstance(resp.body, bytes) else json.dumps(resp.body).encode()
                )
                self.send_response(resp.status)
                headers = {"Content-Type": "application/json", **resp.headers}
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A short poll interval: stop() waits for the loop to notice, and every test pays that wait.
        serve = functools.partial(self._server.serve_forever, poll_interval=0.05)
        self._thread = threading.Thread(target=serve, daemon=True, name=self.name)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- routing ---------------------------------------------------------------------------------
    def route(self, method: str, pattern: str, handler: Route) -> None:
        self._routes.append((method, re.compile(f"^{pattern}$"), handler))

    def dispatch(self, req: Request) -> Response:
        with self._lock:
            self.requests.append(req)
            if self.unavailable:
                return Response(503, {"error": "Service Unavailable"}, {"Retry-After": "60"})
        for method, pattern, handler in self._routes:
            m = pattern.match(req.path)
            if m and method == req.method:
                with self._lock:
                    return handler(req, *m.groups())
        return self.not_found(req)

    def not_found(self, req: Request) -> Response:
        self.violate(f"{req.method} {req.path}: no such operation")
        return Response(404, {"error": {"message": f"Unrecognized request URL ({req.method}: {req.path})"}})

    def violate(self, message: str) -> None:
        with self._lock:
            self.violations.append(message)

    def calls(self, method: str, path_regex: str) -> list[Request]:
        pattern = re.compile(f"^{path_regex}$")
        return [r for r in self.requests if r.method == method and pattern.match(r.path)]
