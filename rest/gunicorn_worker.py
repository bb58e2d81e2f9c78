"""gunicorn's gevent worker as REST runs it: idle connections capped, and HTTP refused in the API's JSON shape.

- A connection reaches the worker once its first bytes have come (TCP_DEFER_ACCEPT), and idle ones (accepted
  or kept alive, no request being handled) are capped per client and per process by closing the oldest
  (rest/idle_connections.py), so a flood of idle connections never fills the greenlet pool: accepting, and so
  the probes, do not wait behind it (rest/gunicorn.conf.py says more).
- gunicorn answers a request it cannot parse (a bad request line, a request line or header over its limits, a
  malformed header) before the app sees it, with an HTML page. Clients of this API expect
  `{"error": "<code>", "message": "<sentence>"}` for every error, so this worker writes that instead.
- What gunicorn lets through and RFC 9112 does not: an HTTP/1.1 request without `Host` (section 3.2: 400),
  and a chunk larger than any body REST accepts, which gunicorn would wait for until the body deadline (408).
"""

from __future__ import annotations

import json
import resource
import socket

from gunicorn import util
from gunicorn.http import message
from gunicorn.http.body import ChunkedReader
from gunicorn.http.errors import InvalidChunkSize, InvalidHeader
from gunicorn.workers.ggevent import GeventWorker

from msaas.settings import Settings
from rest.idle_connections import IdleConnections

CODES = {400: "bad_request", 403: "forbidden", 414: "uri_too_long", 417: "expectation_failed",
         431: "header_fields_too_large", 500: "internal_error", 501: "not_implemented"}
# A request in flight may hold its connection, a spool file and a connection to Redis or the store; idle ones
# hold their connection only. Beyond them: the listener, logs, metrics files, the app's own pools.
DESCRIPTORS_PER_CONNECTION = 2
SPARE_DESCRIPTORS = 256


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """`gunicorn.util.write_error`'s job, with a JSON body."""
    body = json.dumps({
        "error": CODES.get(status_int, "bad_request"),
        "message": mesg or reason,
    }).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


class MissingHost(InvalidHeader):
    def __init__(self) -> None:
        super().__init__("HOST")

    def __str__(self) -> str:
        return "an HTTP/1.1 request must carry a Host header (RFC 9112, section 3.2)"


class ChunkTooLarge(InvalidChunkSize):
    def __init__(self, largest: int) -> None:
        super().__init__(b"")
        self.largest = largest

    def __str__(self) -> str:
        # Not the size itself: a few thousand hex digits are a number too long to write in decimal.
        return f"a chunk is larger than the largest request body ({self.largest} bytes)"


def chunks_up_to(largest: int) -> type[ChunkedReader]:
    """gunicorn's chunked-body reader, refusing a chunk over `largest` bytes as soon as its size line is read."""

    class BoundedChunkedReader(ChunkedReader):
        def parse_chunk_size(self, unreader, data=None):
            size, rest = super().parse_chunk_size(unreader, data)
            if size > largest:
                raise ChunkTooLarge(largest)
            return size, rest

    return BoundedChunkedReader


class RestWorker(GeventWorker):
    idle: IdleConnections

    def use(self, settings: Settings) -> None:
        """The settings gunicorn.conf.py read in the master (its post_fork hook calls this in each worker)."""
        self.settings = settings
        self.idle = IdleConnections(settings.max_idle_connections_per_client, settings.max_idle_connections)

    def init_process(self) -> None:
        # gunicorn has no setting for its error pages or its chunk reader: its handle_error calls
        # util.write_error by name, and Message.set_body_reader ChunkedReader, so in this process those names
        # are REST's.
        util.write_error = write_json_error
        message.ChunkedReader = chunks_up_to(self.settings.max_request_bytes)
        self._allow_descriptors()
        self._defer_accept()
        super().init_process()

    def handle(self, listener, client, addr) -> None:
        # Idle until handle_request: HTTP/1 only (gunicorn.conf.py leaves HTTP/2 off; its streams bypass that).
        self.idle.add(client, addr)
        try:
            super().handle(listener, client, addr)
        finally:
            self.idle.discard(client)

    def handle_request(self, listener_name, req, sock, addr):
        self.idle.discard(sock)
        if req.version >= (1, 1) and not any(name == "HOST" for name, _value in req.headers):
            raise MissingHost()
        handled = super().handle_request(listener_name, req, sock, addr)
        self.idle.add(sock, addr)  # kept alive (a connection to close raised StopIteration instead)
        return handled

    def _defer_accept(self) -> None:
        """The kernel hands over a connection once its first bytes have come, or after `keepalive` seconds:
        until then a silent one costs no descriptor, no greenlet, and no place in the listen queue."""
        for listener in self.sockets:
            if listener.FAMILY in (socket.AF_INET, socket.AF_INET6) and hasattr(socket, "TCP_DEFER_ACCEPT"):
                listener.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, self.cfg.keepalive)

    def _allow_descriptors(self) -> None:
        """Raise the soft limit on open files as far as the pool needs and the hard limit allows; else warn."""
        needed = self.worker_connections * DESCRIPTORS_PER_CONNECTION + SPARE_DESCRIPTORS
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < needed:
            raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            if raised < needed:
                self.log.warning(
                    "open files limited to %d: %d connections (MAX_IDLE_CONNECTIONS and requests in flight) may "
                    "need %d", raised, self.worker_connections, needed,
                )
