"""What every API request passes before its route: the API key (when keys are configured) and the
per-client rate limit. `/` (and the page's static files), the health checks and /metrics stay open for load
balancers, probes and Prometheus."""

from __future__ import annotations

from flask import Flask, request

from msaas.access import UNAUTHORIZED, RateLimit, api_keys, bearer_token, key_accepted, key_client
from msaas.settings import Settings
from rest.backends import backends
from rest.errors import error_response

OPEN_PATHS = ("/", "/healthz", "/readyz", "/metrics")
OPEN_PREFIXES = ("/static/",)


def register(app: Flask, settings: Settings) -> None:
    keys = api_keys(settings.api_keys)
    limit = settings.rate_limit_per_minute

    @app.before_request
    def guard():
        if request.path in OPEN_PATHS or request.path.startswith(OPEN_PREFIXES):
            return None
        client = request.remote_addr or "unknown"
        if keys:
            token = bearer_token(request.headers.get("Authorization", ""))
            if not key_accepted(token, keys):
                response = error_response(401, "unauthorized", UNAUTHORIZED)
                response.headers["WWW-Authenticate"] = 'Bearer realm="msaas"'
                return response
            client = key_client(token)
        if limit:
            return _rate_limit(client, limit)
        return None


def _rate_limit(client: str, limit: int):
    """msaas.access.RateLimit, answered as a 429 with Retry-After."""
    rate_limit = RateLimit(backends().redis, limit)
    wait = rate_limit.over(client)
    if wait is None:
        return None
    response = error_response(429, "too_many_requests", rate_limit.message())
    response.headers["Retry-After"] = str(wait)
    return response
