"""What every API request passes before its route: the API key (when keys are configured) and the
per-client rate limit, by the rule in msaas/access.py (gRPC's calls pass the same). `/` (and the page's static
files), the health checks and /metrics stay open for load balancers, probes and Prometheus."""

from __future__ import annotations

from flask import Flask, request

from msaas.access import Access, Refused
from msaas.settings import Settings
from rest.errors import error_response

OPEN_PATHS = ("/", "/healthz", "/readyz", "/metrics")
OPEN_PREFIXES = ("/static/",)


def register(app: Flask, settings: Settings) -> None:
    """msaas.access decides; refusals are answered 401 (with WWW-Authenticate) or 429 (with Retry-After)."""
    access = Access(app.extensions["msaas"].redis, settings.api_keys, settings.rate_limit_per_minute,
                    "'Authorization: Bearer <key>'")

    @app.before_request
    def guard():
        if request.path in OPEN_PATHS or request.path.startswith(OPEN_PREFIXES):
            return None
        try:
            access.admit(request.remote_addr or "unknown", request.headers.get("Authorization", ""))
        except Refused as refused:
            if refused.code == "unauthorized":
                response = error_response(401, refused.code, refused.message)
                response.headers["WWW-Authenticate"] = 'Bearer realm="msaas"'
            else:
                response = error_response(429, refused.code, refused.message)
                response.headers["Retry-After"] = str(refused.retry_after)
            return response
        return None
