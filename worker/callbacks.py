"""Telling tenants their songs are done: the worker's delivery threads take due callbacks off the callback queue (the
same reliable queue as jobs, msaas/reliable.py), POST `callback.data` as JSON to `callback.url`, signed, to an address
the SSRF guard checked (msaas/callbacks.py), and record each outcome on the tenant's claim.

Each attempt ends by a wall-clock deadline (CALLBACK_TIMEOUT). A failed one goes back on the queue, delayed
CALLBACK_BACKOFF, then twice as long, and so on (`Retry`), so no thread sleeps through a backoff and no receiver holds
up another's; after CALLBACK_ATTEMPTS, or at once if the address is refused, the outcome is final. A callback is
durable from the moment its song is done: it waits in the queue or is held by one thread, whose worker's lease
covers it; a dead worker's are reaped by the others, like its jobs. A receiver may get a repeat (after a worker dies
mid-attempt): `X-Event-Id` is the same for every delivery of one song's callback.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass

import redis
import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError

from msaas.backoff import Backoff
from msaas.callbacks import CallbackRefused, Target, resolve_target, sign
from msaas.claims import Claims
from msaas.deadline import Deadline, DeadlineExceeded, WatchedHTTPPool, WatchedHTTPSPool
from msaas.jobs import Callback
from msaas.reliable import ReliableQueue, Taken
from msaas.settings import Settings
from worker.policies import Retry

log = logging.getLogger(__name__)
TAKE_WAIT = 5.0  # seconds a thread waits for a callback to come due, so a stop request is noticed that quickly
USER_AGENT = "msaas-callback/1"


@dataclass(frozen=True)
class Due:
    """A callback of a finished song: where to send what, and whose claim records the outcome."""

    result: str
    songhash: str
    event_id: str  # the job's id: the same in every delivery, so a receiver can drop repeats
    tenant: str
    callback: Callback

    @classmethod
    def from_json(cls, raw: str) -> Due:
        fields = json.loads(raw)
        return cls(fields["result"], fields["songhash"], fields["event_id"], fields["tenant"],
                   Callback(**fields["callback"]))


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended; the tenant's status shows it."""

    delivered: bool
    detail: str  # "200", "500", "timeout after 10 s", "refused: 10.0.0.1 is a private address", ...
    retryable: bool = True


class CallbackSender:
    """`settings.callback_threads` threads delivering callbacks for worker `worker`."""

    def __init__(self, settings: Settings, queue: ReliableQueue, claims: Claims, worker: str, metrics) -> None:
        self.settings = settings
        self.queue = queue
        self.claims = claims
        self.worker = worker
        self.metrics = metrics
        self.retry = Retry(max(1, settings.callback_attempts), settings.callback_backoff, 3600.0, jitter=0.0)
        self.lease = settings.callback_timeout + 5.0  # an attempt ends by its deadline, within the lease
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.serve, name=f"callbacks-{index}", daemon=True)
                        for index in range(max(1, settings.callback_threads))]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def request_stop(self) -> None:
        self.stopping.set()

    def stop(self) -> None:
        """Take no more callbacks; wait for attempts in flight, each ended by its deadline."""
        self.stopping.set()
        ended = Deadline(self.settings.callback_timeout + TAKE_WAIT + 1, "stopping the delivery threads")
        for thread in self.threads:
            thread.join(ended.remaining())

    def serve(self) -> None:
        backoff = Backoff()
        while not self.stopping.is_set():
            try:
                taken = self.queue.take(self.worker, self.lease)
                backoff.reset()
                if taken is None:
                    self.queue.wait(TAKE_WAIT)
                else:
                    self.handle(taken)
            except redis.RedisError as error:
                delay = backoff.next_delay()
                log.warning("worker %s: callbacks: redis unavailable (%s); retrying in %.1f s", self.worker, error,
                            delay)
                self.stopping.wait(delay)
            except Exception:  # a bug must not silently end a delivery thread; the entry is reaped if held
                log.exception("worker %s: callback delivery raised", self.worker)
                self.stopping.wait(backoff.next_delay())

    def handle(self, taken: Taken) -> None:
        if self.stopping.is_set():  # taken as the stop came: not ours to start
            self.queue.release(taken, counted=False)
            return
        try:
            due = Due.from_json(taken.body)
        except (ValueError, KeyError, TypeError):
            log.error("worker %s: unreadable callback entry set aside: %s", self.worker, taken.body[:200])
            self.queue.bury(taken, "unreadable callback entry")
            return
        attempt = taken.attempts + 1
        outcome = deliver(due, self.settings)
        final = outcome.delivered or not outcome.retryable or not self.retry.allows(attempt)
        fields = {"callback_state": ("delivered" if outcome.delivered else "failed") if final else "pending",
                  "callback_attempts": attempt, "callback_outcome": outcome.detail,
                  "callback_delivered": str(outcome.delivered).lower()}
        if final:
            self.metrics.called_back(outcome.delivered, outcome.detail)
            with self.queue.redis.pipeline() as pipe:  # the outcome recorded and the entry acknowledged together
                self.claims.record_callback(due.tenant, due.result, due.event_id, fields, pipe)
                self.queue.ack(taken, pipe)
                pipe.execute()
            return
        self.claims.record_callback(due.tenant, due.result, due.event_id, fields)
        self.queue.release(taken, delay=self.retry.delay(attempt))


def deliver(due: Due, settings: Settings) -> Outcome:
    """One attempt, never raising: resolve and check the host, then POST to the checked address."""
    body = json.dumps(due.callback.data).encode()
    try:
        host, status = _attempt(due.callback.url, body, due.songhash, due.event_id, settings)
    except CallbackRefused as refusal:  # retrying cannot make the address public; no connection was made
        log.warning("song %s: callback refused: %s", due.songhash, refusal.reason)
        return Outcome(False, f"refused: {refusal.reason}", retryable=False)
    except AttemptFailed as failure:
        log.warning("song %s: callback attempt failed: %s", due.songhash, failure)
        return Outcome(False, str(failure))
    except Exception as error:  # a bug must not cost the song its result; the callback is secondary
        log.exception("song %s: callback attempt crashed", due.songhash)
        return Outcome(False, f"error: {error}", retryable=False)
    log.info("song %s: callback to %s delivered (%s)", due.songhash, host, status)
    return Outcome(True, status)


class AttemptFailed(Exception):
    """One attempt did not get a 2xx answer; another may."""


def _attempt(url: str, body: bytes, songhash: str, event_id: str, settings: Settings) -> tuple[str, str]:
    """(host, 2xx status code); AttemptFailed otherwise."""
    # One wall-clock deadline for the whole attempt: the name lookup, every address and every byte of the answer.
    deadline = Deadline(settings.callback_timeout, "callback")
    # Resolved afresh for each attempt, and connected to the very address that was checked.
    try:
        target = deadline.wait_for(resolve_target, url, settings.callback_allow_hosts)
    except DeadlineExceeded:
        raise AttemptFailed(f"timeout after {settings.callback_timeout:g} s resolving the host") from None
    except OSError as error:
        raise AttemptFailed(f"cannot resolve host: {error}") from None
    return target.host, _post(target, body, songhash, event_id, settings, deadline)


def _post(target: Target, body: bytes, songhash: str, event_id: str, settings: Settings, deadline: Deadline) -> str:
    timestamp = int(time.time())
    headers = {
        "Host": target.host_header,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Songhash": songhash,
        "X-Event-Id": event_id,
        "X-Timestamp": str(timestamp),
    }
    if settings.callback_secret:
        headers["X-Signature"] = "sha256=" + sign(settings.callback_secret, timestamp, body)
    if target.userinfo:
        headers.update(urllib3.make_headers(basic_auth=target.userinfo))
    timeout = settings.callback_timeout
    failure = ""
    # A receiver that drips its headers has its socket shut when the attempt's time is up.
    try:
        with deadline.enforced():
            # Like socket.create_connection: the next address when one refuses (localhost: ::1, then 127.0.0.1).
            for address in target.addresses:
                try:
                    status = _send(target, address, timeout, body, headers)
                except NewConnectionError as error:  # a subclass of the timeout errors: tell it apart first
                    failure = f"connection failed: {_cause(error)}"
                    continue
                if not 200 <= status < 300:  # a 3xx too: redirects are not followed
                    raise AttemptFailed(str(status))
                return str(status)
    except (DeadlineExceeded, urllib3.exceptions.TimeoutError):  # not the builtin of that name
        raise AttemptFailed(f"timeout after {timeout:g} s") from None
    except (HTTPError, OSError) as error:
        raise AttemptFailed(f"connection failed: {_cause(error)}") from None
    raise AttemptFailed(failure)


def _send(target: Target, address: str, timeout: float, body: bytes, headers: dict[str, str]) -> int:
    with _pool(target, address, timeout) as pool:
        response = pool.urlopen(
            "POST", target.path, body=body, headers=headers, retries=False, redirect=False,
            assert_same_host=False, preload_content=False,
        )
        response.close()  # the answer's body means nothing to us: don't wait for it
    return response.status


def _pool(target: Target, address: str, timeout: float) -> urllib3.HTTPConnectionPool:
    """A pool that connects to the checked address while naming the original host (Host header, TLS); its sockets
    are watched by the attempt's deadline."""
    limits = urllib3.Timeout(total=timeout)
    if target.scheme == "https":
        return WatchedHTTPSPool(
            address, target.port, timeout=limits, maxsize=1,
            server_hostname=target.host, assert_hostname=target.host, cert_reqs="CERT_REQUIRED",
        )
    return WatchedHTTPPool(address, target.port, timeout=limits, maxsize=1)


def _cause(error: BaseException) -> str:
    # urllib3's messages start with the connection object's repr, which tells a reader nothing.
    text = str(error)
    return text.split(": ", 1)[1] if text.startswith("<") and ": " in text else text
