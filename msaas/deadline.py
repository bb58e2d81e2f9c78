"""Wall-clock deadlines: every wait on something outside the process (a callback receiver, the object store,
Demucs) ends when its time is up, however the other side behaves.

A socket timeout bounds each read, not the exchange: a peer that sends a byte every few seconds never trips
it. So a deadline, while `enforced`, shuts down every socket opened or reused under it when the time is up
(a blocked read then returns at once), and turns the error that follows into `DeadlineExceeded`. Loops that
poll (the Demucs run) ask `expired` instead, and a call that cannot be cut short (a name lookup) is waited for
only until the time is up (`wait_for`).

Redis is bounded differently: an API request gets a `RedisBudget`, the seconds all its Redis commands may wait
together, and each command's socket timeout is what is left of it (msaas.connections.BudgetedConnection). Only
time spent waiting on Redis is counted, so a song that takes minutes to upload does not spend what queueing it
needs. The budget lives in a context variable: per thread, per gevent greenlet (REST), per asyncio task (gRPC),
and it goes with the work an asyncio task hands to a thread (`contextvars.copy_context`).
"""

from __future__ import annotations

import contextvars
import functools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection

T = TypeVar("T")
_current = threading.local()  # the deadline enforced on this thread, if any
_redis_budget: contextvars.ContextVar[RedisBudget | None] = contextvars.ContextVar("redis_budget", default=None)


class DeadlineExceeded(TimeoutError):
    """A wait outlasted its deadline and was cut short."""

    def __init__(self, what: str, seconds: float) -> None:
        super().__init__(f"{what} took longer than {seconds:g} s")
        self.what = what
        self.seconds = seconds


class Deadline:
    """`seconds` from now, for `what` ("callback to example.com"), on the monotonic clock."""

    def __init__(self, seconds: float, what: str) -> None:
        self.seconds = seconds
        self.what = what
        self.at = time.monotonic() + seconds
        self.fired = False  # the time ran out while enforced, and the watched sockets were shut
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def extend(self, seconds: float) -> None:
        """Later by `seconds`: the time a separation was stopped, lent to another, is not its own."""
        self.at += seconds
        self.seconds += seconds

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.at

    @contextmanager
    def enforced(self) -> Iterator[Deadline]:
        """Within the block, the sockets of `Watched` connections are shut when the time is up; the block then
        ends in DeadlineExceeded, whether or not what it was doing noticed."""
        previous = getattr(_current, "deadline", None)
        _current.deadline = self
        timer = threading.Timer(self.remaining(), self._expire)
        timer.daemon = True
        timer.start()
        try:
            yield self
        except Exception as error:
            if self.fired or self.expired:
                raise DeadlineExceeded(self.what, self.seconds) from error
            raise
        else:
            # A socket shut mid-answer can also look like an answer that ended early (http.client takes the end
            # of the stream for the end of the headers): whatever came back once the time was up is not trusted.
            if self.fired:
                raise DeadlineExceeded(self.what, self.seconds)
        finally:
            timer.cancel()
            _current.deadline = previous
            with self._lock:
                for handle in self._sockets:
                    handle.close()
                self._sockets.clear()

    def wait_for(self, function: Callable[..., T], *args: object) -> T:
        """`function(*args)`, for a call nothing can interrupt (a name lookup in the C library): waited for until
        the time is up, then DeadlineExceeded, the call left to end on its own in a daemon thread."""
        outcome: dict[str, Any] = {}

        def call() -> None:
            try:
                outcome["value"] = function(*args)
            except BaseException as error:  # handed to the waiting thread, whatever it is
                outcome["error"] = error

        thread = threading.Thread(target=call, name=f"deadline: {self.what}", daemon=True)
        thread.start()
        thread.join(self.remaining())
        if thread.is_alive():
            raise DeadlineExceeded(self.what, self.seconds)
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock`'s connection down when the time is up (at once if it already is)."""
        # Through a duplicate of its descriptor: the connection is the same (shutdown acts on it, not on one
        # descriptor), and it stays reachable when TLS takes the original socket over (wrap_socket detaches it).
        try:
            handle = socket.fromfd(sock.fileno(), sock.family, sock.type)
        except OSError:
            return  # closed already: nothing to wait on
        with self._lock:
            self._sockets.append(handle)
            if not self.fired:
                return
        _shut(handle)

    def _expire(self) -> None:
        with self._lock:
            self.fired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def current() -> Deadline | None:
    """The deadline enforced on this thread, if any."""
    return getattr(_current, "deadline", None)


class RedisBudget:
    """`seconds` of waiting on Redis for one request, all its commands together; the clock runs only while one of
    them waits (between `begin` and `end`, which nest: a command that connects first is one wait)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._spent = 0.0
        self._waiting_since: float | None = None
        self._waits = 0
        self._lock = threading.Lock()

    def remaining(self) -> float:
        with self._lock:
            spent = self._spent
            if self._waiting_since is not None:
                spent += time.monotonic() - self._waiting_since
        return max(0.0, self.seconds - spent)

    def begin(self) -> None:
        with self._lock:
            if self._waits == 0:
                self._waiting_since = time.monotonic()
            self._waits += 1

    def end(self) -> None:
        with self._lock:
            self._waits -= 1
            if self._waits == 0 and self._waiting_since is not None:
                self._spent += time.monotonic() - self._waiting_since
                self._waiting_since = None

    def spent_message(self) -> str:
        return f"Redis did not answer within this request's {self.seconds:g} s (REDIS_TIMEOUT)"


def redis_budget() -> RedisBudget | None:
    """The Redis budget of the request in force in this context, if any."""
    return _redis_budget.get()


@contextmanager
def spending_redis_budget(seconds: float) -> Iterator[RedisBudget]:
    """Within the block, Redis commands share a fresh budget of `seconds`."""
    token = _redis_budget.set(RedisBudget(seconds))
    try:
        yield _redis_budget.get()
    finally:
        try:
            _redis_budget.reset(token)
        except ValueError:  # a coroutine closed by the garbage collector ends in another context: nothing to undo
            pass


def with_redis_budget(function: Callable[..., T], seconds: float) -> Callable[..., T]:
    """`function`, each call of it with a Redis budget of its own (REST wraps its WSGI app in it)."""

    @functools.wraps(function)
    def budgeted(*args: Any, **kwargs: Any) -> T:
        with spending_redis_budget(seconds):
            return function(*args, **kwargs)

    return budgeted


def _shut(sock: socket.socket) -> None:
    # shutdown, not close: it wakes a read blocked in another thread, and the owner still closes the socket.
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


class _Watched:
    """Mixin for urllib3 connections: each socket, new or reused, is watched by the deadline in force."""

    timeout: float | None
    sock: socket.socket | None

    def _new_conn(self) -> socket.socket:
        deadline = current()
        if deadline is not None:  # connecting must not outlast the deadline either
            remaining = max(deadline.remaining(), 0.001)
            self.timeout = remaining if self.timeout is None else min(self.timeout, remaining)
        sock = super()._new_conn()  # type: ignore[misc]
        if deadline is not None:
            deadline.watch(sock)
        return sock

    def request(self, *args, **kwargs) -> None:
        deadline = current()
        if deadline is not None and self.sock is not None:  # a kept-alive connection, reused
            deadline.watch(self.sock)
        super().request(*args, **kwargs)  # type: ignore[misc]


class WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class WatchedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = WatchedHTTPConnection


class WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = WatchedHTTPSConnection


def deadline_aware(manager: urllib3.PoolManager) -> urllib3.PoolManager:
    """`manager`, its connections watched by whatever deadline is enforced when they are used."""
    manager.pool_classes_by_scheme = {"http": WatchedHTTPPool, "https": WatchedHTTPSPool}
    return manager
