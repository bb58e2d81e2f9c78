"""Where each song stands (queued, processing, done, failed), kept in one Redis hash per song."""

from __future__ import annotations

import time

import redis

QUEUED, PROCESSING, DONE, FAILED = "queued", "processing", "done", "failed"


class SongStatus:
    def __init__(self, connection: redis.Redis, prefix: str = "status:") -> None:
        self.redis = connection
        self.prefix = prefix

    def set(self, songhash: str, state: str, reason: str = "", worker: str = "") -> None:
        fields = {"state": state, "reason": reason, "worker": worker, f"{state}_at": f"{time.time():.3f}"}
        self.redis.hset(self.prefix + songhash, mapping=fields)

    def get(self, songhash: str) -> dict[str, str]:
        """The song's fields, empty if the service has never seen it."""
        return self.redis.hgetall(self.prefix + songhash)
