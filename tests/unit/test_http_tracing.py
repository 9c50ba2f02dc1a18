"""Issue 7 item 8: each outbound HTTP call (CRM, target, token endpoint) is its own X-Ray subsegment, named
after the system called, with its status; the URL's query (which may carry a key) is never recorded."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from billflow.connectors import http as outbound
from billflow.errors import TransientError
from billflow.observability import tracer


class RecordingSubsegment:
    def __init__(self, name: str) -> None:
        self.name = name
        self.annotations: dict[str, Any] = {}
        self.metadata: dict[str, Any] = {}

    def put_annotation(self, key: str, value: Any) -> None:
        self.annotations[key] = value

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        self.metadata[key] = value


class RecordingProvider:
    """Stands in for the X-Ray recorder (which needs a Lambda segment): keeps what the code recorded."""

    def __init__(self) -> None:
        self.subsegments: list[RecordingSubsegment] = []

    @contextlib.contextmanager
    def in_subsegment(self, name: str) -> Iterator[RecordingSubsegment]:
        subsegment = RecordingSubsegment(name)
        self.subsegments.append(subsegment)
        yield subsegment


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> RecordingProvider:
    provider = RecordingProvider()
    monkeypatch.setattr(tracer, "provider", provider)
    return provider


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404 if "missing" in self.path else 200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_each_call_is_a_subsegment_named_after_the_system_called(recorded: RecordingProvider, server: str) -> None:
    outbound.request("GET", f"{server}/v1/customers?api_key=sk_live_secret", target="stripe")
    outbound.request("GET", f"{server}/rest/opportunities/missing", target="twenty", raise_for_status=False)

    assert [(s.name, s.annotations) for s in recorded.subsegments] == [
        ("## stripe", {"target": "stripe", "status": "200"}),
        ("## twenty", {"target": "twenty", "status": "404"}),
    ]
    assert recorded.subsegments[0].metadata["request"] == {
        "method": "GET", "host": "127.0.0.1", "path": "/v1/customers"}
    assert "sk_live_secret" not in repr([s.metadata for s in recorded.subsegments])


def test_an_unreachable_target_is_recorded_as_such(recorded: RecordingProvider) -> None:
    with pytest.raises(TransientError):
        outbound.request("GET", "http://127.0.0.1:9/token", target="oauth token endpoint", timeout=2)
    [subsegment] = recorded.subsegments
    assert subsegment.name == "## oauth token endpoint" and subsegment.annotations["outcome"] == "unreachable"
