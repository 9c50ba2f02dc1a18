"""Issue 8 §6: in production billflow never sends to internal addresses, whatever the URL says or the DNS
answers; the local runtime and tests reach loopback only because they say so (ALLOW_LOOPBACK_TARGETS)."""

from __future__ import annotations

import http.server
import ipaddress
import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

import billflow.settings
import pytest
from billflow.connectors import http as outbound
from billflow.connectors.webhook import check_url
from billflow.errors import ConfigurationError
from billflow.netguard import ForbiddenTarget, check_static_url, refused_reason


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("STAGE", "prod")
    monkeypatch.setenv("ALLOW_LOOPBACK_TARGETS", "true")  # set by mistake: production ignores it
    billflow.settings.get_settings.cache_clear()
    yield
    billflow.settings.get_settings.cache_clear()


@pytest.fixture
def development(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("STAGE", "dev")
    billflow.settings.get_settings.cache_clear()
    yield
    billflow.settings.get_settings.cache_clear()


class Listener:
    """A real server on 127.0.0.1 counting the connections it accepts: a refusal must not reach it."""

    def __init__(self, redirect_to: str | None = None) -> None:
        listener = self
        self.hits = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                listener.hits += 1
                self.send_response(302 if redirect_to else 200)
                if redirect_to:
                    self.send_header("Location", redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def shared_listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


@pytest.fixture
def listener(shared_listener: Listener) -> Listener:
    shared_listener.hits = 0
    return shared_listener


# The address classes of issue 8 §6, each as a URL a rule or a connection could hold.
INTERNAL = {
    "loopback 127.0.0.1": "http://127.0.0.1:{port}/hook",
    "localhost": "http://localhost:{port}/hook",
    "loopback ::1": "http://[::1]:{port}/hook",
    "private 10/8": "http://10.0.0.5/hook",
    "private 172.16/12": "http://172.16.4.1/hook",
    "private 192.168/16": "http://192.168.1.20/hook",
    "metadata 169.254.169.254": "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "metadata fd00:ec2::254": "http://[fd00:ec2::254]/latest/meta-data/",
    "unspecified 0.0.0.0": "http://0.0.0.0:{port}/hook",
    "unspecified ::": "http://[::]:{port}/hook",
    "IPv4-mapped ::ffff:127.0.0.1": "http://[::ffff:127.0.0.1]:{port}/hook",
    "multicast 224.0.0.1": "http://224.0.0.1/hook",
    "CGNAT 100.64/10": "http://100.64.3.2/hook",
    "unique-local fc00::/7": "http://[fc00::1]/hook",
    "link-local fe80::/10": "http://[fe80::1]/hook",
    "link-local 169.254/16": "http://169.254.10.10/hook",
    "decimal spelling of 127.0.0.1": "http://2130706433:{port}/hook",
    "NAT64 of 127.0.0.1": "http://[64:ff9b::7f00:1]/hook",
    "reserved 240/4": "http://240.0.0.1/hook",
}


@pytest.mark.parametrize("url", INTERNAL.values(), ids=INTERNAL.keys())
def test_production_refuses_each_internal_address_class_at_send_time(
    production: None, listener: Listener, url: str,
) -> None:
    with pytest.raises(ForbiddenTarget) as err:
        outbound.request("GET", url.format(port=listener.port), target="webhook")
    assert "billflow does not call" in err.value.message
    assert listener.hits == 0


@pytest.mark.parametrize("url", INTERNAL.values(), ids=INTERNAL.keys())
def test_production_refuses_each_internal_address_class_when_a_rule_is_saved(production: None, url: str) -> None:
    with pytest.raises(ConfigurationError, match="billflow does not call"):
        check_url(url.format(port=443).replace(":443", ""))


def test_a_host_name_that_resolves_to_the_metadata_endpoint_is_refused_at_connect_time(
    production: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The name passes every static check; only its DNS answer is internal (a rebinding attacker's).
    check_static_url("http://hooks.attacker.example/x")
    real = socket.getaddrinfo

    def resolver(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "hooks.attacker.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 80))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with pytest.raises(ForbiddenTarget, match=re.escape("resolves to 169.254.169.254, the cloud metadata endpoint")):
        outbound.request("GET", "http://hooks.attacker.example/x")


def test_a_redirect_to_an_internal_address_is_refused_as_such(
    development: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALLOW_LOOPBACK_TARGETS", "true")  # the redirecting server itself is local
    server = Listener(redirect_to="http://169.254.169.254/latest/meta-data/")
    try:
        refused = re.escape("redirect: 169.254.169.254 is the cloud metadata endpoint")
        with pytest.raises(ForbiddenTarget, match=refused):
            outbound.request("GET", f"http://127.0.0.1:{server.port}/go")
    finally:
        server.close()


def test_loopback_is_refused_by_default_outside_production_too(
    development: None, listener: Listener, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ALLOW_LOOPBACK_TARGETS", raising=False)
    with pytest.raises(ForbiddenTarget, match="a loopback address"):
        outbound.request("GET", f"http://127.0.0.1:{listener.port}/hook")
    assert listener.hits == 0


def test_the_local_runtime_and_tests_reach_loopback_only_when_they_say_so(
    development: None, listener: Listener, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALLOW_LOOPBACK_TARGETS", "true")
    assert outbound.request("GET", f"http://127.0.0.1:{listener.port}/hook").status == 200
    assert outbound.request("GET", f"http://localhost:{listener.port}/hook").status == 200
    assert listener.hits == 2
    with pytest.raises(ForbiddenTarget, match="a private address"):  # loopback only, nothing else internal
        outbound.request("GET", "http://10.0.0.5/hook")


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.215.14", "2606:4700:4700::1111", "2a00:1450:4001::65"])
def test_public_addresses_are_allowed(production: None, address: str) -> None:
    assert refused_reason(ipaddress.ip_address(address)) is None


def test_a_placeholder_host_is_decided_at_send_time_not_at_save_time(production: None) -> None:
    check_static_url("https://{{ record.domain }}/hook")
