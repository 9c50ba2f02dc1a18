"""Where billflow may send: never to the machine it runs on, its private network or the cloud's metadata.

Webhook URLs, connection base URLs and URLs built from placeholders are the user's; a DNS answer can change
between save and send. So every outbound connection resolves the host itself, checks every address it
resolves to, and connects only to an address it checked (connectors/http.py). `check_static_url` refuses
what is already wrong when a URL is saved (a literal internal address, `localhost`).

Refused: loopback, private (RFC 1918, unique-local fc00::/7), link-local (169.254/16 with the metadata
endpoint 169.254.169.254, fe80::/10), multicast, unspecified (0.0.0.0, ::), shared CGNAT 100.64/10, the
reserved and documentation ranges, and IPv6 forms that carry an IPv4 address (IPv4-mapped ::ffff:0:0/96,
NAT64, 6to4, Teredo) when that address is refused, plus every IPv4-mapped address. Only the local runtime
and tests may reach loopback, by setting ALLOW_LOOPBACK_TARGETS=true outside production; never by default.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from typing import Any

from billflow.errors import ConfigurationError
from billflow.settings import get_settings

PRODUCTION_STAGES = frozenset({"prod", "production"})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ForbiddenTarget(ConfigurationError):
    """The URL's host is, or resolves to, an address billflow never calls: final, fix the URL."""


def loopback_allowed() -> bool:
    """True only outside production and only when the local runtime or a test says so."""
    if get_settings().stage.lower() in PRODUCTION_STAGES:
        return False
    return get_settings().allow_loopback_targets


def refused_reason(ip: IPAddress, *, allow_loopback: bool | None = None) -> str | None:
    """Why billflow will not connect to this address, or None when it may."""
    allow = loopback_allowed() if allow_loopback is None else allow_loopback
    if ip in _METADATA:
        return "the cloud metadata endpoint"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return "an IPv4-mapped IPv6 address"
        embedded = ip.sixtofour or (ip.teredo[1] if ip.teredo else None) or (
            ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None)
        if embedded is not None:
            inner = refused_reason(embedded, allow_loopback=False)
            return f"an IPv6 address carrying {embedded}, {inner}" if inner else None
    if ip.is_loopback:
        return None if allow else "a loopback address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_link_local:
        return "a link-local address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "a shared (carrier-grade NAT) address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved or not ip.is_global:
        return "a reserved address"
    return None


def check_static_url(url: str, target: str = "URL") -> None:
    """At save time: an absolute http(s) URL whose host is not a literal internal address or a local name.

    A host still holding a placeholder (`{{ ... }}`) is decided at send time, when it is known.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ForbiddenTarget(f"{target}: {url!r} is not an absolute http:// or https:// URL")
    host = parts.hostname
    if "{" in host or "%7b" in host.lower():
        return
    _check_host(host, target)


def _check_host(host: str, target: str) -> None:
    name = host.rstrip(".").lower()
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        if not loopback_allowed():
            raise ForbiddenTarget(f"{target}: {host} is this machine; billflow does not call local addresses")
        return
    ip = _literal(host)
    if ip is not None and (reason := refused_reason(ip)) is not None:
        raise ForbiddenTarget(f"{target}: {host} is {reason}; billflow does not call internal addresses")


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        pass
    try:  # inet_aton spellings a resolver also accepts: 2130706433, 0x7f.1, 127.1
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def guarded_create_connection(
    address: tuple[str, int], timeout: Any = socket._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
    source_address: tuple[str, int] | None = None, *, target: str = "target",
) -> socket.socket:
    """socket.create_connection that resolves the host once, refuses if any address it resolves to is
    refused, and connects to the checked addresses only (no second lookup a DNS rebinding could answer)."""
    host, port = address
    _check_host(host, target)
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise OSError(f"cannot resolve {host}: {err.strerror}") from None
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if (reason := refused_reason(ip)) is not None:
            raise ForbiddenTarget(f"{target}: {host} resolves to {ip}, {reason}; billflow does not call "
                                  "internal addresses")
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as err:
            sock.close()
            error = err
    raise error or OSError(f"cannot connect to {host}")
