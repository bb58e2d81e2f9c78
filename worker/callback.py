"""Telling a job's submitter that its song is done: POST `callback.data` as JSON to `callback.url`, signed,
to an address checked by the SSRF guard, retried with exponential backoff; each attempt ends by a
wall-clock deadline (`CALLBACK_TIMEOUT`). The worker's delivery threads (worker/deliveries.py) call this."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError

from msaas.callbacks import CallbackRefused, Target, resolve_target, sign
from msaas.deadline import Deadline, DeadlineExceeded, WatchedHTTPPool, WatchedHTTPSPool
from msaas.jobs import Callback
from msaas.settings import Settings

log = logging.getLogger(__name__)

USER_AGENT = "msaas-callback/1"


@dataclass(frozen=True)
class CallbackOutcome:
    """How the last attempt ended; a job's status shows it."""

    delivered: bool
    attempts: int
    detail: str  # "200", "500", "timeout after 10 s", "refused: 10.0.0.1 is a private address", ...


class AttemptFailed(Exception):
    """One attempt did not get a 2xx answer; another may."""


def deliver(
    callback: Callback,
    songhash: str,
    event_id: str,
    settings: Settings,
    sleep: Callable[[float], None] = time.sleep,
    retrying: Callable[[CallbackOutcome], None] | None = None,
) -> CallbackOutcome:
    """Deliver the callback, retrying up to `settings.callback_attempts` times; never raises (but what
    `sleep` raises to cut the waits short). `retrying` hears each failed attempt that will be retried.

    `event_id` is the same for every delivery of one job, so a receiver can drop repeats.
    """
    body = json.dumps(callback.data).encode()
    attempts = max(1, settings.callback_attempts)
    detail = ""
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            sleep(settings.callback_backoff * 2 ** (attempt - 2))
        try:
            host, detail = _attempt(callback.url, body, songhash, event_id, settings)
        except CallbackRefused as refusal:
            # Retrying cannot make the address public; and no connection was made.
            log.warning("song %s: callback refused: %s", songhash, refusal.reason)
            return CallbackOutcome(delivered=False, attempts=attempt, detail=f"refused: {refusal.reason}")
        except AttemptFailed as failure:
            detail = str(failure)
            log.warning("song %s: callback attempt %d of %d failed: %s", songhash, attempt, attempts, detail)
            if retrying is not None and attempt < attempts:
                retrying(CallbackOutcome(delivered=False, attempts=attempt, detail=detail))
            continue
        except Exception as error:  # a bug must not cost the song its result; the callback is secondary
            log.exception("song %s: callback attempt %d of %d crashed", songhash, attempt, attempts)
            return CallbackOutcome(delivered=False, attempts=attempt, detail=f"error: {error}")
        log.info("song %s: callback to %s delivered (%s) on attempt %d", songhash, host, detail, attempt)
        return CallbackOutcome(delivered=True, attempts=attempt, detail=detail)
    return CallbackOutcome(delivered=False, attempts=attempts, detail=detail)


def _attempt(url: str, body: bytes, songhash: str, event_id: str, settings: Settings) -> tuple[str, str]:
    """Resolve and check the host, then POST to the checked address: (host, 2xx status code)."""
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
    """One attempt: the answer's status code if it is 2xx; AttemptFailed otherwise."""
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
    """A pool that connects to the checked address while naming the original host (Host header, TLS); its
    sockets are watched by the attempt's deadline."""
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
