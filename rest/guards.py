"""What every API request passes before its route: the API key (when keys are configured) and the
per-client rate limit. `/` (and the page's static files), the health checks and /metrics stay open for load
balancers, probes and Prometheus.

Requests refused for a missing or wrong key count too, by client address: once an address has made more
than the limit of them in a minute, it gets 429 before its key is even looked at, so guessing keys is as slow as
the rate limit (a right guess included), and a client sharing that address is held up for the rest of the minute.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time

import redis
from flask import Flask, request

from msaas.settings import Settings
from rest.backends import backends
from rest.errors import error_response

log = logging.getLogger(__name__)
OPEN_PATHS = ("/", "/healthz", "/readyz", "/metrics")
OPEN_PREFIXES = ("/static/",)


def register(app: Flask, settings: Settings) -> None:
    keys = [key.strip() for key in settings.api_keys.split(",") if key.strip()]
    limit = settings.rate_limit_per_minute

    @app.before_request
    def guard():
        if request.path in OPEN_PATHS or request.path.startswith(OPEN_PREFIXES):
            return None
        client = request.remote_addr or "unknown"
        if keys:
            refusals = f"refused:{client}"
            if limit and (held := _rate_limit(refusals, limit, count=False)):
                return held
            token = _bearer_token()
            if token is None or not any(hmac.compare_digest(token.encode(), key.encode()) for key in keys):
                if limit and (held := _rate_limit(refusals, limit)):
                    return held
                response = error_response(
                    401, "unauthorized", "a valid API key is required: send 'Authorization: Bearer <key>'"
                )
                response.headers["WWW-Authenticate"] = 'Bearer realm="msaas"'
                return response
            # Limits follow the key, not the address; only a digest of it is ever kept.
            client = "key:" + hashlib.sha256(token.encode()).hexdigest()[:16]
        if limit:
            return _rate_limit(client, limit)
        return None


def _bearer_token() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _rate_limit(client: str, limit: int, count: bool = True):
    """A fixed one-minute window per client, counted in Redis so every REST replica shares it; with
    `count=False`, only whether the client is over the limit already."""
    now = time.time()
    window = int(now // 60)
    key = f"ratelimit:{client}:{window}"
    try:
        if count:
            with backends().redis.pipeline() as pipe:
                made, _ = pipe.incr(key).expire(key, 120).execute()
        else:
            made = int(backends().redis.get(key) or 0)
    except redis.RedisError as error:
        log.warning("rate limit not checked, Redis unreachable: %s", error)
        return None  # the route itself will answer 503 if it needs Redis
    if made > limit:
        response = error_response(
            429, "too_many_requests", f"more than {limit} requests in a minute from this client; slow down"
        )
        response.headers["Retry-After"] = str(60 * (window + 1) - int(now))
        return response
    return None
