"""A local webhook receiver for the demo and tests: checks billflow's signature on every delivery."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from billflow.connectors.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature


class SignedWebhookReceiver:
    """Answers 200 {"id": ...} to a correctly signed POST, 401 otherwise; keeps what arrived."""

    def __init__(self, secret: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.secret = secret
        self.deliveries: list[Any] = []
        self.violations: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> SignedWebhookReceiver:
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                timestamp = self.headers.get(TIMESTAMP_HEADER, "")
                signed = self.headers.get(SIGNATURE_HEADER) == signature(receiver.secret, timestamp, body)
                with receiver._lock:
                    if signed:
                        receiver.deliveries.append(json.loads(body or b"null"))
                        answer, status = {"id": f"delivery_{len(receiver.deliveries)}"}, 200
                    else:
                        receiver.violations.append(f"{self.path}: missing or wrong {SIGNATURE_HEADER}")
                        answer, status = {"error": "bad signature"}, 401
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler
