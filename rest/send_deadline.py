"""How slowly a client may take its answer: the body deadline (rest/limits.py), the other way.

A client that sends a request and never reads the answer (a track, a mix) would hold its greenlet, its connection
and the object store's for ever: gunicorn writes with no deadline, and the kernel keeps a connection whose reader
advertises a zero window open as long as that reader answers. Enough of them (3,100 against the defaults' two
processes) fill the greenlet pools, and REST stops accepting even /healthz. So an answer must be taken at
`BODY_MIN_RATE` bytes per second on average, after `BODY_GRACE_SECONDS` of slack, counting only the time spent
writing to the client (not the time the store takes to hand over the next piece); a write that falls behind is
interrupted (a `gevent.Timeout` under gunicorn's gevent worker) and the connection cut, as the client had left.
"""

from __future__ import annotations

import errno
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator

log = logging.getLogger(__name__)


class SendTimeout(BrokenPipeError):
    """The client fell behind in taking its answer. An EPIPE, so gunicorn closes the connection as quietly as it
    does for a client that left (rest/send_deadline.py logs it)."""

    def __init__(self) -> None:
        super().__init__(errno.EPIPE, "the client took its answer too slowly")


class DeadlineOutput:
    """An answer's body whose every piece must reach the client by the deadline: `grace` seconds plus the bytes
    sent so far at `rate` bytes per second, of time spent writing."""

    def __init__(self, body: Iterable[bytes], grace: float, rate: int, client: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.body, self.pieces = body, iter(body)
        self.grace, self.rate, self.client, self.clock = grace, rate, client, clock
        self.sent, self.writing = 0, 0.0  # bytes handed to the server, seconds it spent writing them
        self.handed_at: float | None = None  # when the last piece went to the server to write
        self.timer = None
        self.cut = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        self._written()
        piece = next(self.pieces)
        self.sent += len(piece)
        budget = self.grace + self.sent / self.rate - self.writing
        self.timer = _timer(max(budget, 0.001))
        self.handed_at = self.clock()
        return piece

    def close(self) -> None:
        self._written()
        if self.cut:
            log.info("client %s took its answer slower than %d bytes/s: cut off after %d bytes", self.client,
                     self.rate, self.sent)
        close = getattr(self.body, "close", None)
        if close is not None:
            close()

    def _written(self) -> None:
        """The last piece is written (or its write was cut): stop its timer, and count the time it took."""
        if self.timer is not None:
            self.cut = self.cut or not self.timer.pending
            self.timer.close()
            self.timer = None
        if self.handed_at is not None:
            self.writing += self.clock() - self.handed_at
            self.handed_at = None


def _timer(seconds: float):
    """Under gevent (gunicorn's worker), a started timer that interrupts the greenlet's write with SendTimeout;
    elsewhere (the tests' threaded server) None: a blocked write cannot be interrupted there."""
    gevent = sys.modules.get("gevent")
    if gevent is None or not gevent.monkey.is_module_patched("socket"):
        return None
    timer = gevent.Timeout(seconds, SendTimeout())
    timer.start()
    return timer


class SendDeadline:
    """WSGI middleware putting every answer's body behind a `DeadlineOutput` (files the server sends itself, with
    sendfile, are the page's small static ones: left as they are)."""

    def __init__(self, app, grace: float, rate: int) -> None:
        self.app, self.grace, self.rate = app, grace, rate

    def __call__(self, environ: dict, start_response):
        body = self.app(environ, start_response)
        file_wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(file_wrapper, type) and isinstance(body, file_wrapper):
            return body
        return DeadlineOutput(body, self.grace, self.rate, environ.get("REMOTE_ADDR", "unknown"))
