"""Callbacks that are safe to offer: which addresses a callback may reach, and how each delivery is signed.

The REST service checks a callback's URL when a song is submitted (without looking names up); the worker
resolves the host when it delivers, checks every address the name resolves to, and connects to the address
it checked, so a name cannot resolve to a public address for the check and a private one for the connection.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import SplitResult, urlsplit

from msaas.errors import BadRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SCHEMES = {"http": 80, "https": 443}
# RFC 6761: these names are the loopback interface whatever a resolver says.
LOOPBACK_NAMES = ("localhost", ".localhost")
CGNAT = ipaddress.ip_network("100.64.0.0/10")
UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")


class CallbackRefused(BadRequest):
    """A callback aimed where the service must not send requests (SSRF guard)."""

    code = "callback_refused"

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # the short form, for a job's status: "10.0.0.1 is a private address"


@dataclass(frozen=True)
class Target:
    """Where one delivery goes: the checked address to connect to, and the names to present there."""

    scheme: str
    host: str  # the URL's hostname, for TLS (SNI and certificate check)
    host_header: str  # host[:port] as written in the URL
    port: int
    addresses: tuple[str, ...]  # every address the host resolved to, all checked; connect to these only
    path: str  # path and query
    userinfo: str  # "user:password" from the URL, or ""


def parse_allow_hosts(value: str | Iterable[str]) -> frozenset[str]:
    """`"localhost, Receiver.local"` (the CALLBACK_ALLOW_HOSTS setting) -> the set of lowercased hostnames."""
    names = value.split(",") if isinstance(value, str) else value
    return frozenset(_normal_host(name) for name in names if name.strip())


def address_kind(ip: IPAddress) -> str | None:
    """Why a callback may not reach `ip` ("a private address"), or None for a public unicast address."""
    ip = _embedded(ip)
    if ip.is_global and not ip.is_multicast and not ip.is_reserved:
        return None
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip in CGNAT:
        return "a carrier-grade NAT address"
    if ip in UNIQUE_LOCAL:
        return "a unique-local address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    return "not a public address"


def check_callback_url(url: str, allow_hosts: str | Iterable[str]) -> None:
    """Refuse a callback URL that is plainly aimed inside (at submit time; names are resolved at delivery).

    Raises CallbackRefused for a scheme other than http(s), an IP literal in any encoding that is not a
    public address, and `localhost` names, unless the host is in `allow_hosts`.
    """
    parts = _split(url)
    host = _normal_host(parts.hostname or "")
    if host in parse_allow_hosts(allow_hosts):
        return
    if host == LOOPBACK_NAMES[0] or host.endswith(LOOPBACK_NAMES[1]):
        _refuse(host, None, "a loopback address")
    ip = _ip_literal(host)
    if ip is not None and (kind := address_kind(ip)) is not None:
        _refuse(host, ip, kind)


def resolve_target(url: str, allow_hosts: str | Iterable[str]) -> Target:
    """Resolve the callback's host once and check every address (at delivery).

    Raises CallbackRefused if any address is not public and the host is not allow-listed, and OSError
    (socket.gaierror) if the name does not resolve.
    """
    parts = _split(url)
    host = _normal_host(parts.hostname or "")
    port = parts.port or SCHEMES[parts.scheme]
    addresses = _resolve(host, port)
    if host not in parse_allow_hosts(allow_hosts):
        for ip in addresses:
            if (kind := address_kind(ip)) is not None:
                _refuse(host, ip, kind)
    path = parts.path or "/"
    return Target(
        scheme=parts.scheme,
        host=host,
        host_header=parts.netloc.rpartition("@")[2],
        port=port,
        addresses=tuple(str(ip) for ip in addresses),
        path=f"{path}?{parts.query}" if parts.query else path,
        userinfo=parts.netloc.rpartition("@")[0],
    )


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of `"<timestamp>.<body>"` under `secret` (the X-Signature header, after "sha256=")."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def verify(
    secret: str,
    timestamp: int | str,
    body: bytes,
    signature: str,
    tolerance: float = 300,
    now: float | None = None,
) -> bool:
    """True if `signature` (hex, with or without "sha256=") signs `body` at `timestamp`, within `tolerance` s."""
    try:
        sent_at = int(timestamp)
    except (TypeError, ValueError):
        return False
    # A stale timestamp means a replayed delivery, however good its signature.
    if abs((time.time() if now is None else now) - sent_at) > tolerance:
        return False
    expected = sign(secret, sent_at, body)
    return hmac.compare_digest(expected.encode(), signature.removeprefix("sha256=").encode())


def _split(url: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise CallbackRefused(f"callback url {url!r} is malformed", "malformed url") from None
    if parts.scheme not in SCHEMES:
        raise CallbackRefused(
            f"callback scheme {parts.scheme!r} is not allowed; callbacks must use http or https",
            f"scheme {parts.scheme!r} is not http(s)",
        )
    if not parts.hostname:
        raise CallbackRefused(f"callback url {url!r} has no host", "no host")
    return parts


def _normal_host(name: str) -> str:
    # "LocalHost." and "localhost" are the same host; brackets come with IPv6 literals in lists.
    return name.strip().strip("[]").rstrip(".").lower()


def _ip_literal(host: str) -> IPAddress | None:
    """The address `host` spells, in any form a resolver accepts (`0x7f000001`, `2130706433`, `127.1`)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError as error:  # a label the IDNA codec rejects
        raise socket.gaierror(f"{host!r} is not a valid host name: {error}") from None
    addresses: list[IPAddress] = []
    for family, _type, _proto, _name, sockaddr in found:
        if family in (socket.AF_INET, socket.AF_INET6):
            ip = ipaddress.ip_address(sockaddr[0])
            if ip not in addresses:
                addresses.append(ip)
    if not addresses:
        raise socket.gaierror(f"{host!r} has no IP address")
    return addresses


def _embedded(ip: IPAddress) -> IPAddress:
    """The IPv4 address that ::ffff:10.0.0.1 reaches (or 6to4's 2002:a00:1:: embeds); else `ip` itself."""
    if isinstance(ip, ipaddress.IPv6Address) and (embedded := ip.ipv4_mapped or ip.sixtofour):
        return embedded
    return ip


def _refuse(host: str, ip: IPAddress | None, kind: str) -> NoReturn:
    if ip is None:
        reason = f"{host} is {kind}"
    else:
        judged = _embedded(ip)
        shown = str(ip) if judged == ip else f"{ip} ({judged})"
        if _ip_literal(host) is None:
            reason = f"{host} resolves to {shown}, {kind}"
        elif host == str(ip) and judged == ip:
            reason = f"{host} is {kind}"
        else:  # an odd spelling (0x7f000001, 127.1) or a mapped address: show what it means
            reason = f"{host} ({judged}) is {kind}"
    raise CallbackRefused(f"callback host {reason}; callbacks may only reach public addresses", reason)
