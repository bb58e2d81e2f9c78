"""Where each result stands (queued, processing, done, failed, cancelled), kept in one Redis hash per result.

A result is a song separated with given options (`msaas.naming.Result`); each state change records
`<state>_at`, so the hash holds the time of every transition. The hash also keeps the options the job was
accepted with (`options`, JSON), so a status names what runs, whatever any service's default is now.
"""

from __future__ import annotations

import json
import time

import redis

from msaas.jobqueue import JobQueue
from msaas.jobs import Job

QUEUED, PROCESSING, DONE, FAILED, CANCELLED = "queued", "processing", "done", "failed", "cancelled"
STATES = (QUEUED, PROCESSING, DONE, FAILED, CANCELLED)
ACTIVE = (QUEUED, PROCESSING)
CANCELLED_KEPT = 86400  # seconds a "cancelled" status is kept, so a client polling it hears why it stopped
FORGET_DONE = "if redis.call('hget', KEYS[1], 'state') == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
# Compare and set, in one step: a job's worker moves its result on only while the result is still that job's
# and not cancelled. ARGV: job id, the state it must be in ('' for any but cancelled), expiry (0: none), fields.
IF_JOB = """
local state, job = redis.call('hget', KEYS[1], 'state'), redis.call('hget', KEYS[1], 'job_id')
if state == 'cancelled' or (ARGV[2] ~= '' and (state ~= ARGV[2] or job ~= ARGV[1])) then return 0 end
redis.call('hset', KEYS[1], unpack(ARGV, 4))
if tonumber(ARGV[3]) > 0 then redis.call('expire', KEYS[1], ARGV[3]) else redis.call('persist', KEYS[1]) end
return 1
"""


class SongStatus:
    def __init__(self, connection: redis.Redis, prefix: str = "status:") -> None:
        self.redis = connection
        self.prefix = prefix
        self._if_job = connection.register_script(IF_JOB)

    def key(self, result: str) -> str:
        return self.prefix + result

    @staticmethod
    def fields(state: str, reason: str = "", **extra: str | int | float) -> dict[str, str | int | float]:
        return {"state": state, "reason": reason, f"{state}_at": round(time.time(), 3), **extra}

    def set(
        self, result: str, state: str, reason: str = "", *, expire_in: int | None = None, **extra: str | int | float
    ) -> None:
        """Record `state` (and when it was reached); `reason` is cleared unless given. The status expires after
        `expire_in` seconds if given, else never (an expiry set for an earlier state does not carry over)."""
        key = self.key(result)
        with self.redis.pipeline() as pipe:  # one transaction: no moment with the state but the wrong expiry
            pipe.hset(key, mapping=self.fields(state, reason, **extra))
            if expire_in:
                pipe.expire(key, expire_in)
            else:
                pipe.persist(key)
            pipe.execute()

    def start(self, job: Job, worker: str, attempt: int) -> bool:
        """Mark the job's result processing by `worker`; False if it was cancelled meanwhile."""
        return self._move(job, "", PROCESSING, worker=worker, job_id=job.id, attempts=attempt, progress=0)

    def finish(self, job: Job, state: str, reason: str = "", expire_in: int | None = None, **extra) -> bool:
        """Move a result its job is processing to `state`; False if it was cancelled or is another job's now."""
        return self._move(job, PROCESSING, state, reason, expire_in, job_id=job.id, **extra)

    def _move(self, job: Job, required: str, state: str, reason: str = "", expire_in: int | None = None,
              **extra) -> bool:
        pairs = [item for pair in self.fields(state, reason, **extra).items() for item in pair]
        return bool(self._if_job(keys=[self.key(job.result.id)], args=[job.id, required, expire_in or 0, *pairs]))

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
