"""The worker queue: a Redis list of JSON jobs, consumed with the reliable-queue pattern.

REST pushes on the left; a worker moves the rightmost job atomically into its own processing list
(BLMOVE), so a job is never only in a dead worker's memory, and removes it from there once it is done.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from msaas.errors import BadRequest
from msaas.jobs import Job


@dataclass(frozen=True)
class Delivery:
    """A job taken off the queue: the raw entry (to acknowledge it) and the decoded job, if it decodes."""

    raw: str
    job: Job | None
    error: str | None = None


class JobQueue:
    def __init__(self, connection: redis.Redis, name: str) -> None:
        self.redis = connection
        self.name = name
        self.dead_letters = f"{name}:dead"

    def processing_list(self, worker: str) -> str:
        return f"{self.name}:processing:{worker}"

    def push(self, job: Job) -> None:
        self.redis.lpush(self.name, job.to_json())

    def waiting(self) -> list[Job]:
        """Jobs not yet taken by a worker, next one first; entries that do not decode are left out."""
        jobs = []
        for raw in reversed(self.redis.lrange(self.name, 0, -1)):
            try:
                jobs.append(Job.from_json(raw))
            except BadRequest:
                continue
        return jobs

    def take(self, worker: str, timeout: float) -> Delivery | None:
        """Block up to `timeout` seconds for a job and move it into `worker`'s processing list."""
        raw = self.redis.blmove(self.name, self.processing_list(worker), timeout, "RIGHT", "LEFT")
        if raw is None:
            return None
        raw = raw.decode() if isinstance(raw, bytes) else raw
        try:
            return Delivery(raw, Job.from_json(raw))
        except BadRequest as error:
            return Delivery(raw, None, error.message)

    def ack(self, worker: str, delivery: Delivery) -> None:
        """The job is finished (done or failed for good): drop it from the processing list."""
        self.redis.lrem(self.processing_list(worker), 1, delivery.raw)

    def requeue(self, worker: str, delivery: Delivery) -> None:
        """Hand an unfinished job back, at the end that is taken next."""
        with self.redis.pipeline() as pipe:
            pipe.rpush(self.name, delivery.raw)
            pipe.lrem(self.processing_list(worker), 1, delivery.raw)
            pipe.execute()

    def bury(self, worker: str, delivery: Delivery, reason: str) -> None:
        """Keep a job that cannot be processed on the dead-letter list, with why, then acknowledge it."""
        with self.redis.pipeline() as pipe:  # MULTI/EXEC: never in both lists, never in neither
            pipe.lpush(self.dead_letters, json.dumps({"reason": reason, "job": delivery.raw}))
            pipe.lrem(self.processing_list(worker), 1, delivery.raw)
            pipe.execute()
