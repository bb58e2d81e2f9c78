"""Where each song stands (queued, processing, done, failed), kept in one Redis hash per song."""

from __future__ import annotations

import time

import redis

QUEUED, PROCESSING, DONE, FAILED = "queued", "processing", "done", "failed"


class SongStatus:
    def __init__(self, connection: redis.Redis, prefix: str = "status:") -> None:
        self.redis = connection
        self.prefix = prefix

    def set(self, songhash: str, state: str, reason: str = "", **fields: str | int) -> None:
        """Record `state` (and when it was reached); `reason` is cleared unless given."""
        mapping = {"state": state, "reason": reason, f"{state}_at": f"{time.time():.3f}", **fields}
        self.redis.hset(self.prefix + songhash, mapping=mapping)

    def get(self, songhash: str) -> dict[str, str]:
        """The song's fields, empty if the service has never seen it."""
        return self.redis.hgetall(self.prefix + songhash)
