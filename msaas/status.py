"""Where each result stands (queued, processing, done, failed), kept in one Redis hash per result.

A result is a song separated with given options (`msaas.jobs.result_id`); each state change records
`<state>_at`, so the hash holds the time of every transition.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

import redis

from msaas.jobqueue import JobQueue
from msaas.jobs import Job

QUEUED, PROCESSING, DONE, FAILED = "queued", "processing", "done", "failed"
ACTIVE = (QUEUED, PROCESSING)
# Record a callback's outcome on the status of the job that asked for it, not on a later job's (nor revive
# a status that expired or was forgotten).
IF_JOB = """
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
        (pipeline or self.redis).eval(IF_JOB, 1, self.key(result), *args)

    def progress(self, result: str, percent: float) -> None:
        self.redis.hset(self.key(result), "progress", f"{percent:.0f}")

    def get(self, result: str) -> dict[str, str]:
        """The result's fields, empty if the service has never seen it."""
        return self.redis.hgetall(self.key(result))

    def forget_done(self, result: str) -> bool:
        """Forget that a result is done, its tracks being gone, so a new submission separates it again; a
        result queued or processing meanwhile is left alone (one step: Lua)."""
        return bool(self.redis.eval(FORGET_DONE, 1, self.key(result), DONE))

    def forget(self, songhash: str) -> int:
        """Drop the status of every result of a song; how many there were."""
        keys = list(self.redis.scan_iter(match=f"{self.prefix}{songhash}*"))
        return self.redis.delete(*keys) if keys else 0

    def enqueue_once(self, queue: JobQueue, job: Job, result: str) -> str | None:
        """Queue `job` unless its result is already queued or processing; return that state, or None if
        the job was queued. Atomic (WATCH/MULTI): two identical submissions never queue twice."""
        key = self.key(result)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    state = pipe.hget(key, "state")
                    if state in ACTIVE:
                        return state
                    pipe.multi()
                    pipe.lpush(queue.name, job.to_json())
                    pipe.hset(key, mapping=self.fields(QUEUED, job_id=job.id, attempts=0))
                    pipe.hdel(key, "progress", "worker")
                    pipe.execute()
                    return None
                except redis.WatchError:
                    continue
