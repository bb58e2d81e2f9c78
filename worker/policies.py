"""What the worker does when a job does not end in its tracks: named policies, each decided in one place.

- `Retry` (rq's `Retry(max, interval)`): a failed attempt is queued again after an exponential backoff with jitter,
  until the job has failed `max_attempts` times; then `DeadLetter`.
- `DeadLetter`: the job goes to the dead letters with its reason, attempts and last worker, where an operator lists,
  inspects, requeues or purges it (`msaas admin dead`, both APIs' admin calls).
- `TimeLimit`: how long a separation may take, from the song's length; past it the process group is killed and the
  attempt fails (and is retried, by `Retry`).
- `Cancellation`: a running attempt asks, about once a second, whether it still holds its job: cancelled by a client,
  or lost to a lease that ran out while its worker was paused. Either way it stops and removes only its own files.
- Shutdown and outages hand the job back, not counted: neither is the job's fault. `outage` says which errors are
  outages: Redis or the store unreachable, and Redis refusing writes for now (full under `noeviction`, a replica).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from msaas.errors import BackendUnavailable
from msaas.settings import Settings

# How Redis refuses a write it may take later: full (maxmemory with noeviction), or a replica. Inside a script, Redis
# before 7 reports it as "Error running script ... -OOM ...", which redis-py cannot tell from a script's own error.
REFUSED_WRITES = ("OOM command not allowed", "READONLY ")


def outage(error: BaseException) -> bool:
    """Whether `error` is the backing services' (wait and try again), not the job's."""
    if isinstance(error, redis.ConnectionError | redis.TimeoutError | BackendUnavailable):
        return True
    return isinstance(error, redis.ResponseError) and any(words in str(error) for words in REFUSED_WRITES)


class Stopped(Exception):
    """The attempt no longer holds its job: nothing more is written for it, and its own files are removed."""


class Cancelled(Stopped):
    """A client cancelled the job while it ran."""


class Lost(Stopped):
    """Another delivery of the job is the current one (this attempt's lease ran out while it was paused)."""


@dataclass(frozen=True)
class Retry:
    max_attempts: int = 3
    backoff: float = 10.0  # seconds before the second attempt; doubling for each later one...
    cap: float = 600.0  # ...up to this
    jitter: float = 0.25  # each wait shortened by up to this share, so failures spread out

    @classmethod
    def of(cls, settings: Settings) -> Retry:
        return cls(settings.max_attempts, settings.retry_backoff, settings.retry_backoff_cap)

    def allows(self, attempt: int) -> bool:
        """Whether a job whose attempt number `attempt` (1 for the first) failed gets another."""
        return attempt < self.max_attempts

    def delay(self, attempt: int) -> float:
        """Seconds to wait after attempt number `attempt` failed."""
        wait = min(self.cap, self.backoff * 2 ** (attempt - 1))
        return wait * (1 - self.jitter * random.random())


@dataclass(frozen=True)
class TimeLimit:
    minimum: float = 120.0
    per_audio_second: float = 10.0  # for htdemucs; a model `cost` times as slow (msaas/models.py) gets as many more
    maximum: float = 0.0  # whatever the song; 0: no bound

    @classmethod
    def of(cls, settings: Settings) -> TimeLimit:
        return cls(settings.demucs_timeout_min, settings.demucs_timeout_factor, settings.demucs_timeout_max)

    def seconds(self, audio_seconds: float, passes: int = 1, cost: float = 1.0) -> float:
        """A separation's limit: `passes` is how many times the model goes over the song (Demucs' shifts), `cost`
        what a second of audio costs with the model against htdemucs (`msaas.models.relative_cost`)."""
        limit = self.minimum + self.per_audio_second * audio_seconds * max(1, passes) * cost
        return min(limit, self.maximum) if self.maximum > 0 else limit


class Cancellation:
    """Asks `still_held()` at most once per `interval` seconds; raises Cancelled or Lost once it says no."""

    def __init__(self, still_held: Callable[[], bool | None], cancelled: Callable[[], bool],
                 interval: float = 1.0) -> None:
        self.still_held = still_held  # None: could not tell (Redis away), ask again later
        self.cancelled = cancelled
        self.interval = interval
        self.asked = time.monotonic()

    def check(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if now - self.asked < self.interval:
            return
        self.asked = now
        self.raise_if_gone()

    def raise_if_gone(self) -> None:
        if self.still_held() is False:
            raise Cancelled() if self.cancelled() else Lost()
