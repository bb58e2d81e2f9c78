"""The connections one REST process holds while they wait on their client for a request, and the caps on them.

A connection is idle from when it is accepted, and again after each answer it is kept alive for, until a
request's headers have arrived whole: it holds a file descriptor and a greenlet and asks nothing. Beyond
`per_client` idle connections from one client, or `total` in all, the oldest idle one is closed: the newcomer
is served. So a client sharing an address with a flood of silent connections (a kubelet's probe, an ingress)
still gets its answer at once: its connection sends its request as soon as it opens, so it is never the oldest.
Closing an idle connection is always allowed (RFC 9112, section 9.8); a client reopens it when it needs one.
"""

from __future__ import annotations

import _socket
import ipaddress
import socket
from collections import OrderedDict

from msaas.errors import ConfigError


class IdleConnections:
    def __init__(self, per_client: int, total: int) -> None:
        if not 1 <= per_client <= total:
            raise ConfigError(
                f"MAX_IDLE_CONNECTIONS_PER_CLIENT={per_client} must be at least 1 and at most "
                f"MAX_IDLE_CONNECTIONS={total}"
            )
        self.per_client, self.total = per_client, total
        self._clients: OrderedDict[socket.socket, str] = OrderedDict()  # connection -> client, oldest first
        self._by_client: dict[str, OrderedDict[socket.socket, None]] = {}
        self.closed = 0  # idle connections closed to make room

    def __len__(self) -> int:
        return len(self._clients)

    def add(self, connection: socket.socket, address: object) -> None:
        """`connection` now waits for a request; close the oldest idle ones beyond the caps."""
        client = client_of(address)
        self.discard(connection)
        self._clients[connection] = client
        same = self._by_client.setdefault(client, OrderedDict())
        same[connection] = None
        if len(same) > self.per_client:
            self._close(next(iter(same)))
        if len(self._clients) > self.total:
            self._close(next(iter(self._clients)))

    def discard(self, connection: socket.socket) -> None:
        """`connection` is handling a request, or is gone."""
        client = self._clients.pop(connection, None)
        if client is None:
            return
        same = self._by_client[client]
        del same[connection]
        if not same:
            del self._by_client[client]

    def _close(self, connection: socket.socket) -> None:
        self.discard(connection)
        self.closed += 1
        shut_down(connection)


def shut_down(connection: socket.socket) -> None:
    """End both directions of `connection` as the kernel does for a client that left: the greenlet reading it
    reads the end of the stream and finishes quietly. (gevent's own shutdown, and close, fail that read with
    EBADF instead, which gunicorn logs as an error with its traceback.)"""
    kernel_socket = _socket.socket(fileno=connection.fileno())
    try:
        kernel_socket.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone
    finally:
        kernel_socket.detach()


def client_of(address: object) -> str:
    """Who a connection belongs to: its IPv4 address, or its IPv6 /64 (one subscriber's usual share: an attacker
    holding one has 2^64 addresses); "" for a Unix socket."""
    if not isinstance(address, tuple):
        return ""
    host = str(address[0])
    if ":" not in host:
        return host  # IPv4, the usual case, without parsing it on every connection
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ip.ipv4_mapped or ipaddress.ip_network((ip, 64), strict=False))
    return host
