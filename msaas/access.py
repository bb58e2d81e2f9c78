"""Who may call the APIs, and how often: one rule for REST and gRPC.

Each API reads the key from its own request (an `Authorization: Bearer` header, `authorization` metadata) and
answers a refusal in its own wire format (401 or 429; UNAUTHENTICATED or RESOURCE_EXHAUSTED); the rule is here.
A request is admitted as a tenant (msaas/tenants.py): the key's, or the open tenant when no keys are configured.

Requests count against a one-minute window: a tenant's by the tenant (its `requests_per_minute`, else
RATE_LIMIT_PER_MINUTE), whatever addresses it comes from; the open tenant's by client address. Requests refused for a
missing or wrong key count by address too: once an address has made more than the limit of them in a minute, it is
refused as over the limit before its key is even looked at, so guessing keys is as slow as the rate limit. Both APIs
count in the same Redis keys, so a client's REST requests and gRPC calls share one limit.
"""

from __future__ import annotations

import logging
import time

import redis

from msaas.errors import OverLimit, Unauthorized
from msaas.tenants import OPEN, Tenant, Tenants

log = logging.getLogger(__name__)


def bearer_token(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` value, or None."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class RateLimit:
    """A fixed one-minute window per client, counted in Redis so every replica of every API shares it."""

    def __init__(self, connection: redis.Redis, per_minute: int) -> None:
        self.redis = connection
        self.per_minute = per_minute

    def over(self, client: str, limit: int, count: bool = True) -> int | None:
        """Count this request (unless `count` is False: only look) and return the seconds until the client may
        call again if it is over `limit`, else None; None too when Redis is unreachable (the request itself
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
        return 60 * (window + 1) - int(now) if made > limit else None


class Access:
    def __init__(self, connection: redis.Redis, tenants: Tenants, per_minute: int, how_to_send_a_key: str) -> None:
        """`per_minute`: RATE_LIMIT_PER_MINUTE (0: unlimited); `how_to_send_a_key`: how this API's clients send one,
        for the refusal's message."""
        self.tenants = tenants
        self.limit = RateLimit(connection, per_minute)
        self.unauthorized = f"a valid API key is required: send {how_to_send_a_key}"

    def admit(self, address: str, authorization: str) -> Tenant:
        """The tenant a request from `address` with this `Authorization` value acts as; Unauthorized or OverLimit."""
        directory = self.tenants.current()
        token = bearer_token(authorization)
        if directory.open and token is None:
            self._hold(address, self.limit.per_minute)
            return OPEN
        refusals = f"refused:{address}"
        self._hold(refusals, self.limit.per_minute, count=False)
        tenant = directory.find(token) if token is not None else None
        if tenant is None:
            if directory.open:  # a key the open service does not know: as if none was sent
                self._hold(address, self.limit.per_minute)
                return OPEN
            self._hold(refusals, self.limit.per_minute)
            raise Unauthorized(self.unauthorized)
        self._hold(f"tenant:{tenant.name}", tenant.requests_per_minute or self.limit.per_minute)
        return tenant

    def require_admin(self, tenant: Tenant) -> None:
        """Admin routes: an admin key, or a service with no keys at all (a laptop's)."""
        directory = self.tenants.current()
        if not tenant.admin and (directory.has_admin_keys or not directory.open):
            raise Unauthorized("this needs an admin key (ADMIN_KEYS, or the tenants file's admin_keys)")

    def _hold(self, client: str, limit: int, count: bool = True) -> None:
        if not limit:
            return
        wait = self.limit.over(client, limit, count)
        if wait is not None:
            raise OverLimit(f"more than {limit} requests in a minute from this client; slow down", "too_many_requests",
                            retry_after=wait)
