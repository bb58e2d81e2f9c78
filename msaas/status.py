"""Where each result stands (queued, processing, done, failed, cancelled), kept in one Redis hash per result.

A result is a song separated with given options (`msaas.naming.Result`); each state change records
`<state>_at`, so the hash holds the time of every transition. The hash also keeps the options the job was
accepted with (`options`, JSON), so a status names what runs, whatever any service's default is now.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import nullcontext

import redis

from msaas.jobqueue import JobQueue
from msaas.jobs import Job

QUEUED, PROCESSING, DONE, FAILED, CANCELLED = "queued", "processing", "done", "failed", "cancelled"
STATES = (QUEUED, PROCESSING, DONE, FAILED, CANCELLED)
ACTIVE = (QUEUED, PROCESSING)
CANCELLED_KEPT = 86400  # seconds a "cancelled" status is kept, so a client polling it hears why it stopped
# Record a callback's outcome on the status of the job that asked for it, not on a later job's (nor revive
# a status that expired or was forgotten).
IF_JOB_CALLBACK = """
if redis.call('hget', KEYS[1], 'job_id') ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do redis.call('hset', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""
FORGET_DONE = "if redis.call('hget', KEYS[1], 'state') == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class SongStatus:
    def __init__(self, connection: redis.Redis, prefix: str = "status:") -> None:
        self.redis = connection
        self.prefix = prefix

    def key(self, result: str) -> str:
        return self.prefix + result

    @staticmethod
    def fields(state: str, reason: str = "", **extra: str | int | float) -> dict[str, str | int | float]:
        return {"state": state, "reason": reason, f"{state}_at": round(time.time(), 3), **extra}

    def set(
        self, result: str, state: str, reason: str = "", *, expire_in: int | None = None,
        pipeline: redis.client.Pipeline | None = None, **extra: str | int | float,
    ) -> None:
        """Record `state` (and when it was reached); `reason` is cleared unless given. The status expires after
        `expire_in` seconds if given, else never (an expiry set for an earlier state does not carry over).
        With `pipeline`, the change joins that transaction (the caller executes it)."""
        key = self.key(result)
        # One transaction: no moment with the state but the wrong expiry.
        with self.redis.pipeline() if pipeline is None else nullcontext(pipeline) as pipe:
            pipe.hset(key, mapping=self.fields(state, reason, **extra))
            if expire_in:
                pipe.expire(key, expire_in)
            else:
                pipe.persist(key)
            if pipeline is None:
                pipe.execute()

    def record_callback(
        self, result: str, job_id: str, fields: dict[str, str | int], pipeline: redis.client.Pipeline | None = None
    ) -> None:
        """Set the `callback*` fields of `result`'s status, if it is still that of job `job_id`."""
        args = [job_id, *(str(item) for pair in fields.items() for item in pair)]
        (pipeline or self.redis).eval(IF_JOB_CALLBACK, 1, self.key(result), *args)

    def start(self, job: Job, worker: str, attempt: int) -> bool:
        """Mark the job's result processing by `worker`; False if it was cancelled meanwhile."""
        return self._move(job, None, PROCESSING, worker=worker, job_id=job.id, attempts=attempt, progress=0)

    def finish(self, job: Job, state: str, reason: str = "", expire_in: int | None = None,
               then: Callable[[redis.client.Pipeline], None] | None = None, **extra) -> bool:
        """Move a result its job is processing to `state`, and do `then(pipeline)`'s writes (a callback's delivery
        entry) in the same transaction; neither happens, and False, if it was cancelled or is another job's now."""
        return self._move(job, PROCESSING, state, reason, expire_in, then, job_id=job.id, **extra)

    def _move(self, job: Job, required: str | None, state: str, reason: str = "", expire_in: int | None = None,
              then: Callable[[redis.client.Pipeline], None] | None = None, **extra) -> bool:
        """Compare and set (WATCH/MULTI): a cancel, or a newer job of the same result, wins over this job."""
        key = self.key(job.result.id)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    current, job_id = pipe.hmget(key, "state", "job_id")
                    if current == CANCELLED or (required and (current != required or job_id != job.id)):
                        return False
                    pipe.multi()
                    self.set(job.result.id, state, reason, expire_in=expire_in, pipeline=pipe, **extra)
                    if then is not None:
                        then(pipe)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def is_cancelled(self, job: Job) -> bool:
        state, job_id = self.redis.hmget(self.key(job.result.id), "state", "job_id")
        return state == CANCELLED and job_id == job.id

    def progress(self, result: str, percent: float) -> None:
        self.redis.hset(self.key(result), "progress", f"{percent:.0f}")

    def get(self, result: str) -> dict[str, str]:
        """The result's fields, empty if the service has never seen it."""
        return self.redis.hgetall(self.key(result))

    def forget_done(self, result: str) -> bool:
        """Forget that a result is done, its tracks being gone, so a new submission separates it again; a
        result queued or processing meanwhile is left alone (one step: Lua)."""
        return bool(self.redis.eval(FORGET_DONE, 1, self.key(result), DONE))

    def results_of(self, songhash: str) -> list[str]:
        """Every result of a song the service has a status for."""
        return [key.removeprefix(self.prefix) for key in self.redis.scan_iter(match=f"{self.prefix}{songhash}*")]

    def forget(self, result: str) -> None:
        self.redis.delete(self.key(result))

    def enqueue_once(self, queue: JobQueue, job: Job) -> str | None:
        """Queue `job` unless its result is already queued or processing; return that state, or None if
        the job was queued. Atomic (WATCH/MULTI): two identical submissions never queue twice."""
        key = self.key(job.result.id)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    state = pipe.hget(key, "state")
                    if state in ACTIVE:
                        return state
                    pipe.multi()
                    queue.push(job, pipeline=pipe)
                    pipe.delete(key)  # no field of an earlier run (progress, worker, callback) carries over
                    pipe.hset(key, mapping=self.fields(
                        QUEUED, job_id=job.id, attempts=0, options=json.dumps(job.options.as_fields()),
                        seconds=job.seconds,
                    ))
                    pipe.execute()
                    return None
                except redis.WatchError:
                    continue

    def cancel(self, queue: JobQueue, result: str) -> str | None:
        """Cancel the result's job if it is queued (it leaves the queue) or processing (its worker stops it
        within seconds and writes nothing more); return the state it was in, or None if it was not active."""
        key = self.key(result)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key, queue.name)
                    state, job_id = pipe.hmget(key, "state", "job_id")
                    if state not in ACTIVE:
                        return None
                    entries = queue.entries_of(job_id, pipe) if state == QUEUED else []
                    pipe.multi()
                    for raw in entries:
                        pipe.lrem(queue.name, 0, raw)
                    pipe.hset(key, mapping=self.fields(CANCELLED, "cancelled by a client"))
                    pipe.hdel(key, "progress")
                    pipe.expire(key, CANCELLED_KEPT)
                    pipe.execute()
                    return state
                except redis.WatchError:
                    continue
