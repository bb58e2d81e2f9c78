"""The worker queue: a Redis list of JSON jobs, consumed with the reliable-queue pattern.

REST pushes on the left; a worker moves the rightmost job atomically into its own processing list (BLMOVE),
so a job is never only in a dead worker's memory. A live worker keeps a lease key alive; when a worker's
lease expires, any live worker puts the jobs of its processing list back on the queue (`reap`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import redis

from msaas.errors import InvalidJob
from msaas.jobs import Job

T = TypeVar("T")
IF_OWNER = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == 'del' then return redis.call('del', KEYS[1]) end
return redis.call('pexpire', KEYS[1], ARGV[3])
"""


@dataclass(frozen=True)
class Delivery:
    """A job taken off the queue: the raw entry (to acknowledge it) and the decoded job, if it decodes."""

    raw: str
    job: Job | None
    error: str | None = None


class JobQueue:
    def __init__(self, connection: redis.Redis, name: str, default_model: str) -> None:
        self.redis = connection
        self.name = name
        self.default_model = default_model  # for entries that name no model (pushed by a script)
        self.dead_letters = f"{name}:dead"
        # Compare and act in one step: a lock that expired and was taken by another worker is left alone.
        self._if_owner = connection.register_script(IF_OWNER)

    def processing_list(self, worker: str) -> str:
        return f"{self.name}:processing:{worker}"

    def lease_key(self, worker: str) -> str:
        return f"{self.name}:lease:{worker}"

    def result_lock_key(self, result: str) -> str:
        return f"{self.name}:song:{result}"  # "song": the name the locks had when a result was a song

    def push(self, job: Job, pipeline: redis.client.Pipeline | None = None) -> None:
        """The one way onto the queue; with `pipeline`, as part of the caller's transaction."""
        (pipeline or self.redis).lpush(self.name, job.to_json())

    def decode(self, raw: str) -> Job:
        return Job.from_json(raw, self.default_model)

    def waiting(self) -> list[Job]:
        """Jobs not yet taken by a worker, next one first; entries that do not decode are left out."""
        return [job for raw in reversed(self.redis.lrange(self.name, 0, -1)) if (job := _decode(self, raw))]

    def entries_of(self, job_id: str, connection: redis.Redis | redis.client.Pipeline | None = None) -> list[str]:
        """The queue's entries of one job (as they are, to remove them)."""
        entries = (connection or self.redis).lrange(self.name, 0, -1)
        return [raw for raw in entries if (job := _decode(self, raw)) and job.id == job_id]

    def take(self, worker: str, timeout: float) -> Delivery | None:
        """Block up to `timeout` seconds for a job and move it into `worker`'s processing list."""
        raw = self.redis.blmove(self.name, self.processing_list(worker), timeout, "RIGHT", "LEFT")
        if raw is None:
            return None
        try:
            return Delivery(raw, self.decode(raw))
        except InvalidJob as error:
            return Delivery(raw, None, error.message)

    def ack(self, worker: str, delivery: Delivery) -> None:
        """The job is finished (done or failed for good): drop it from the processing list."""
        self.redis.lrem(self.processing_list(worker), 1, delivery.raw)

    def _move(self, worker: str, delivery: Delivery, push: str, target: str, entry: str) -> None:
        # One MULTI/EXEC: the job is never in both lists, and never in neither.
        with self.redis.pipeline() as pipe:
            getattr(pipe, push)(target, entry)
            pipe.lrem(self.processing_list(worker), 1, delivery.raw)
            pipe.execute()

    def hand_back(self, worker: str, delivery: Delivery) -> None:
        """Return an unfinished job, not its fault (shutdown, outage), to the end that is taken next."""
        self._move(worker, delivery, "rpush", self.name, delivery.raw)

    def hand_back_all(self, worker: str) -> list[str]:
        """Move everything in `worker`'s processing list back to the queue, oldest to be taken first."""
        moved = []
        while (raw := self.redis.lmove(self.processing_list(worker), self.name, "RIGHT", "RIGHT")) is not None:
            moved.append(raw)
        return moved

    def postpone(self, worker: str, delivery: Delivery) -> None:
        """Put a job, uncounted, behind the others (its result is busy elsewhere)."""
        self._move(worker, delivery, "lpush", self.name, delivery.raw)

    def retry(self, worker: str, delivery: Delivery, job: Job) -> None:
        """Queue `job` (its attempt counted) again behind the others, so a failing job does not block them."""
        self._move(worker, delivery, "lpush", self.name, job.to_json())

    def bury(self, worker: str, delivery: Delivery, reason: str) -> None:
        """Keep a job that will not be retried on the dead-letter list, with why."""
        self._move(worker, delivery, "lpush", self.dead_letters, json.dumps({"reason": reason, "job": delivery.raw}))

    def dead(self) -> list[dict]:
        return [json.loads(entry) for entry in self.redis.lrange(self.dead_letters, 0, -1)]

    def depths(self) -> tuple[int, int, int]:
        """Jobs waiting, jobs in every worker's processing list, and dead letters (for metrics)."""
        processing = sum(self.redis.llen(key) for key in self.redis.scan_iter(match=self.processing_list("*")))
        return self.redis.llen(self.name), processing, self.redis.llen(self.dead_letters)

    def renew_lease(self, worker: str, seconds: float) -> None:
        self.redis.set(self.lease_key(worker), "alive", px=int(seconds * 1000))

    def drop_lease(self, worker: str) -> None:
        self.redis.delete(self.lease_key(worker))

    def lock_result(self, result: str, worker: str, seconds: float) -> bool:
        """Only one worker at a time may write a result's tracks; False if another holds the result."""
        key = self.result_lock_key(result)
        if self.redis.set(key, worker, nx=True, px=int(seconds * 1000)):
            return True
        return self.redis.get(key) == worker

    def renew_result_lock(self, result: str, worker: str, seconds: float) -> None:
        self._if_owner(keys=[self.result_lock_key(result)], args=[worker, "pexpire", int(seconds * 1000)])

    def unlock_result(self, result: str, worker: str) -> None:
        self._if_owner(keys=[self.result_lock_key(result)], args=[worker, "del", 0])

    def reap(self) -> list[tuple[str, Job | None]]:
        """Put back on the queue every job held by a worker whose lease expired; return what was requeued.

        Each recovered job counts one attempt, so a job that kills its worker every time ends dead-lettered.
        """
        def requeue(raw: str) -> tuple[str, Job | None]:
            job = _decode(self, raw)
            if job is None:
                return raw, None
            job = job.next_attempt()
            return job.to_json(), job

        return reap_lists(self.redis, self.processing_list(""), self.lease_key, self.name, requeue)


def reap_lists(
    connection: redis.Redis,
    prefix: str,
    lease_key: Callable[[str], str],
    queue: str,
    requeue: Callable[[str], tuple[str, T]],
) -> list[tuple[str, T]]:
    """Move the entries of every processing list `<prefix><worker>` whose worker's lease expired back onto
    `queue`, as `requeue(raw)` rewrites them; return (worker, what requeue said) for each."""
    recovered: list[tuple[str, T]] = []
    for key in connection.scan_iter(match=f"{prefix}*", count=100):
        worker = key.removeprefix(prefix)
        with connection.pipeline() as pipe:
            try:
                # WATCH: if the worker comes back, or another reaper gets there first, nothing happens twice.
                pipe.watch(key, lease_key(worker))
                if pipe.exists(lease_key(worker)):
                    continue
                entries = pipe.lrange(key, 0, -1)
                if not entries:
                    continue
                requeued = [requeue(raw) for raw in entries]
                pipe.multi()
                # The processing list's newest entry is on the left: pushing left to right onto the
                # taken end leaves the oldest entry to be taken first.
                for entry, _ in requeued:
                    pipe.rpush(queue, entry)
                pipe.delete(key)
                pipe.execute()
                recovered.extend((worker, outcome) for _, outcome in requeued)
            except redis.WatchError:
                continue
    return recovered


def _decode(queue: JobQueue, raw: str) -> Job | None:
    try:
        return queue.decode(raw)
    except InvalidJob:
        return None
