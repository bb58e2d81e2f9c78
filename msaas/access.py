"""Who may call the APIs, and how often: API keys and the per-client rate limit, the same for REST and gRPC.

Each API reads the key from its own request (an `Authorization: Bearer` header, `authorization` metadata) and
answers refusals in its own wire format; the rules are here.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time

import redis

log = logging.getLogger(__name__)
UNAUTHORIZED = "a valid API key is required: send 'Authorization: Bearer <key>'"


def api_keys(setting: str) -> list[str]:
    """API_KEYS as a list; empty: no authentication."""
    return [key.strip() for key in setting.split(",") if key.strip()]


def bearer_token(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` value, or None."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def key_accepted(token: str | None, keys: list[str]) -> bool:
    return token is not None and any(hmac.compare_digest(token.encode(), key.encode()) for key in keys)


def key_client(token: str) -> str:
    """Limits follow the key, not the address; only a digest of it is ever kept."""
    return "key:" + hashlib.sha256(token.encode()).hexdigest()[:16]


class RateLimit:
    """A fixed one-minute window per client, counted in Redis so every replica of every API shares it."""

    def __init__(self, connection: redis.Redis, per_minute: int) -> None:
        self.redis = connection
        self.per_minute = per_minute

    def over(self, client: str) -> int | None:
        """Seconds until the client may call again if it is over the limit; None if it may go on (and when
        Redis is unreachable: the request itself will fail if it needs Redis)."""
        if not self.per_minute:
            return None
        now = time.time()
        window = int(now // 60)
        key = f"ratelimit:{client}:{window}"
        try:
            with self.redis.pipeline() as pipe:
                count, _ = pipe.incr(key).expire(key, 120).execute()
        except redis.RedisError as error:
            log.warning("rate limit not checked, Redis unreachable: %s", error)
            return None
        return 60 * (window + 1) - int(now) if count > self.per_minute else None

    def message(self) -> str:
        return f"more than {self.per_minute} requests in a minute from this client; slow down"
