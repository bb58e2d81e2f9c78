"""What every API request passes before its route: the API key, which names the tenant the request acts as, and the
rate limit, by the rule in msaas/access.py (gRPC's calls pass the same). `/` (and the page's static files), the
health checks and /metrics stay open for load balancers, probes and Prometheus."""

from __future__ import annotations

from flask import Flask, g, request

from msaas.tenants import OPEN
from rest.backends import backends

OPEN_PATHS = ("/", "/healthz", "/readyz", "/metrics")
OPEN_PREFIXES = ("/static/",)


def register(app: Flask) -> None:
    """Refusals are the named errors Unauthorized (401, with WWW-Authenticate) and OverLimit (429, Retry-After),
    answered by rest/errors.py."""

    @app.before_request
    def guard():
        g.tenant = OPEN
        if request.path in OPEN_PATHS or request.path.startswith(OPEN_PREFIXES):
            return
        g.tenant = backends().access.admit(request.remote_addr or "unknown", request.headers.get("Authorization", ""))
