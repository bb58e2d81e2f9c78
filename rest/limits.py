"""What a request may hold and how slowly it may arrive: small fields, and a body that keeps coming.

Fields: everything but the song (`mp3`) is a handful of options and a callback, so the fields of one request,
in JSON, multipart or the query string, may take `MAX_FIELD_BYTES` in all; beyond that REST answers 413
`field_too_large` while the body is still streaming in, so no field is ever held whole.

Body deadline: a client may send its body as slowly as it likes only for so long. Reading the body from
`wsgi.input` must keep up an average of `BODY_MIN_RATE` bytes per second, with `BODY_GRACE_SECONDS` of slack;
a read that would fall behind is cut off (under gunicorn's gevent worker, a `gevent.Timeout` interrupts it) and
REST answers 408. The slack covers a client's start and short stalls; the rate is that of a slow mobile link.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from typing import BinaryIO

from flask import Flask, request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import RequestTimeout

from msaas.errors import BadRequest, FieldTooLarge

MAX_FIELD_BYTES = 64 * 1024
MAX_FORM_PARTS = 64  # a multipart body's parts; the contract has a handful


def field_too_large(where: str) -> FieldTooLarge:
    return FieldTooLarge(
        f"{where} take more than {MAX_FIELD_BYTES // 1024} KiB; every field but 'mp3' (options, callback, "
        "callback data) must fit in that together"
    )


def check_fields(fields: Iterable[tuple[str, str]], where: str) -> None:
    """Refuse form fields or query parameters larger than the fields' budget, together."""
    if sum(len(name) + len(value) for name, value in fields) > MAX_FIELD_BYTES:
        raise field_too_large(where)


def register(app: Flask) -> None:
    @app.before_request
    def small_query():
        check_fields(request.args.items(multi=True), "the query string's parameters")


class BodyTimeout(RequestTimeout):
    description = "the request body arrived too slowly; send it at a steady pace"


class DeadlineInput:
    """`wsgi.input` with a deadline on each read: by then the body must have come at `rate` bytes per second on
    average, after `grace` seconds; past it, `BodyTimeout` (408)."""

    def __init__(
        self, stream: BinaryIO, length: int | None, grace: float, rate: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream, self.length, self.grace, self.rate, self.clock = stream, length, grace, rate, clock
        self.started, self.received = clock(), 0

    def read(self, size: int = -1) -> bytes:
        return self._timed(self.stream.read, size, size)

    def readline(self, size: int = -1) -> bytes:
        return self._timed(self.stream.readline, size, size)

    def _timed(self, read: Callable[[int], bytes], size: int, want: int) -> bytes:
        if self.length is not None:
            want = self.length - self.received if want < 0 else min(want, self.length - self.received)
        budget = self.started + self.grace + (self.received + max(want, 0)) / self.rate - self.clock()
        if budget <= 0:
            raise BodyTimeout()
        try:
            with _interrupt_after(budget):
                data = read(size)
        except ParseException as error:  # gunicorn decodes a chunked body as the app reads it
            raise BadRequest(f"malformed request body: {error}", "invalid_body") from None
        self.received += len(data)
        return data


class _interrupt_after:  # noqa: N801 - used as a context manager, like gevent.Timeout
    """Under gevent (gunicorn's worker), interrupt the read at the deadline; elsewhere (tests' threaded server)
    a blocked read cannot be interrupted, and the deadline is checked before each read only."""

    def __init__(self, seconds: float) -> None:
        gevent = sys.modules.get("gevent")
        self.timer = gevent.Timeout(seconds) if gevent and _patched() else None

    def __enter__(self) -> None:
        if self.timer is not None:
            self.timer.start()

    def __exit__(self, kind, error, _traceback) -> bool:
        if self.timer is None:
            return False
        self.timer.close()
        if error is self.timer:
            raise BodyTimeout() from None
        return False


def _patched() -> bool:
    from gevent import monkey

    return monkey.is_module_patched("socket")


class BodyDeadline:
    """WSGI middleware putting every request body behind a `DeadlineInput`."""

    def __init__(self, app, grace: float, rate: int) -> None:
        self.app, self.grace, self.rate = app, grace, rate

    def __call__(self, environ: dict, start_response):
        try:
            length = int(environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            length = None  # chunked, or a length werkzeug will refuse itself
        environ["wsgi.input"] = DeadlineInput(environ["wsgi.input"], length, self.grace, self.rate)
        return self.app(environ, start_response)
