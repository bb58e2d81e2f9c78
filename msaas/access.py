"""Who may call the APIs, and how often: API keys and the per-client rate limit, one rule for REST and gRPC.

Each API reads the key from its own request (an `Authorization: Bearer` header, `authorization` metadata) and
answers a refusal in its own wire format (401 or 429; UNAUTHENTICATED or RESOURCE_EXHAUSTED); the rule is here.

Requests refused for a missing or wrong key count too, by client address: once an address has made more
than the limit of them in a minute, it is refused as over the limit before its key is even looked at, so
guessing keys is as slow as the rate limit (a right guess included), and a client sharing that address is held
up for the rest of the minute. Both APIs count in the same Redis keys, so a client's REST requests and gRPC
calls share one limit.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time

import redis

log = logging.getLogger(__name__)


class Refused(Exception):
    """No valid key (`code` "unauthorized"), or over the limit ("too_many_requests", with `retry_after` s)."""

    def __init__(self, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.retry_after = code, message, retry_after


def bearer_token(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` value, or None."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class RateLimit:
    """A fixed one-minute window per client, counted in Redis so every replica of every API shares it."""

    def __init__(self, connection: redis.Redis, per_minute: int) -> None:
        self.redis = connection
        self.per_minute = per_minute

    def over(self, client: str, count: bool = True) -> int | None:
        """Count this request (unless `count` is False: only look) and return the seconds until the client may
        call again if it is over the limit, else None; None too when Redis is unreachable (the request itself
        will fail if it needs Redis)."""
        now = time.time()
        window = int(now // 60)
        key = f"ratelimit:{client}:{window}"
        try:
            if count:
                with self.redis.pipeline() as pipe:
                    made, _ = pipe.incr(key).expire(key, 120).execute()
            else:
                made = int(self.redis.get(key) or 0)
        except redis.RedisError as error:
            log.warning("rate limit not checked, Redis unreachable: %s", error)
            return None
        return 60 * (window + 1) - int(now) if made > self.per_minute else None


class Access:
    def __init__(self, connection: redis.Redis, api_keys: str, per_minute: int, how_to_send_a_key: str) -> None:
        """`api_keys`: the API_KEYS setting (comma-separated; empty: no keys); `how_to_send_a_key`: how this API's
        clients send one, for the refusal's message."""
        self.keys = [key.strip() for key in api_keys.split(",") if key.strip()]
        self.limit = RateLimit(connection, per_minute)
        self.unauthorized = f"a valid API key is required: send {how_to_send_a_key}"

    def admit(self, address: str, authorization: str) -> None:
        """Let a request from `address` with this `Authorization` value through, or raise Refused."""
        client = address
        if self.keys:
            refusals = f"refused:{address}"
            self._hold(refusals, count=False)
            token = bearer_token(authorization)
            if token is None or not any(hmac.compare_digest(token.encode(), key.encode()) for key in self.keys):
                self._hold(refusals)
                raise Refused("unauthorized", self.unauthorized)
            # Limits follow the key, not the address; only a digest of it is ever kept.
            client = "key:" + hashlib.sha256(token.encode()).hexdigest()[:16]
        self._hold(client)

    def _hold(self, client: str, count: bool = True) -> None:
        if not self.limit.per_minute:
            return
        wait = self.limit.over(client, count)
        if wait is not None:
            raise Refused("too_many_requests",
                          f"more than {self.limit.per_minute} requests in a minute from this client; slow down", wait)
