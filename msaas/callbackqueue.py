"""Callbacks waiting to be delivered: a Redis list beside the job queue, consumed the same reliable way.

A worker that finishes a song records `done` and queues the song's callback in one transaction; its
delivery threads move entries into the worker's own processing list (BLMOVE) and drop them once the outcome
is recorded. Entries of a worker whose lease expired go back on the list (`reap`), like its jobs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

import redis

from msaas.jobqueue import reap_lists
from msaas.jobs import Callback


@dataclass(frozen=True)
class DueCallback:
    """The callback of a finished job: where to send what, and which result's status records the outcome."""

    result: str
    songhash: str
    event_id: str  # the job's id: the same in every delivery, so a receiver can drop repeats
    callback: Callback

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> DueCallback:
        fields = json.loads(raw)
        return cls(fields["result"], fields["songhash"], fields["event_id"], Callback(**fields["callback"]))


@dataclass(frozen=True)
class Taken:
    """An entry moved into a worker's processing list: the raw entry (to drop it) and what it says."""

    raw: str
    due: DueCallback | None  # None: the entry does not decode


class CallbackQueue:
    def __init__(self, connection: redis.Redis, name: str) -> None:
        self.redis = connection
        self.name = name

    def processing_list(self, worker: str) -> str:
        return f"{self.name}:processing:{worker}"

    def push(self, due: DueCallback, pipeline: redis.client.Pipeline | None = None) -> None:
        (pipeline or self.redis).lpush(self.name, due.to_json())

    def take(self, worker: str, timeout: float) -> Taken | None:
        """Block up to `timeout` seconds for a callback and move it into `worker`'s processing list."""
        raw = self.redis.blmove(self.name, self.processing_list(worker), timeout, "RIGHT", "LEFT")
        if raw is None:
            return None
        try:
            return Taken(raw, DueCallback.from_json(raw))
        except (ValueError, KeyError, TypeError):
            return Taken(raw, None)

    def done(self, worker: str, taken: Taken, pipeline: redis.client.Pipeline | None = None) -> None:
        """The callback's outcome is recorded: drop it from the processing list."""
        (pipeline or self.redis).lrem(self.processing_list(worker), 1, taken.raw)

    def hand_back(self, worker: str, taken: Taken) -> None:
        """Return an undelivered callback (its worker is stopping) to the end that is taken next."""
        with self.redis.pipeline() as pipe:
            pipe.rpush(self.name, taken.raw)
            pipe.lrem(self.processing_list(worker), 1, taken.raw)
            pipe.execute()

    def hand_back_all(self, worker: str) -> list[str]:
        """Move everything in `worker`'s processing list back, oldest to be taken first."""
        moved = []
        while (raw := self.redis.lmove(self.processing_list(worker), self.name, "RIGHT", "RIGHT")) is not None:
            moved.append(raw)
        return moved

    def pending(self) -> int:
        """Callbacks waiting or being delivered (for metrics and tests)."""
        taken = sum(self.redis.llen(key) for key in self.redis.scan_iter(match=self.processing_list("*")))
        return self.redis.llen(self.name) + taken

    def reap(self, lease_key: Callable[[str], str]) -> list[str]:
        """Put back every callback held by a worker whose lease (`lease_key(worker)`) expired; which workers."""
        recovered = reap_lists(self.redis, self.processing_list(""), lease_key, self.name, lambda raw: (raw, None))
        return [worker for worker, _ in recovered]
