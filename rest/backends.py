"""The backing services one REST app talks to, built once by `create_app`, and the tenant of the request at hand."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app, g

from msaas.services import Services
from msaas.tenants import Tenant
from rest.metrics import RestMetrics


@dataclass(frozen=True)
class Backends:
    services: Services
    metrics: RestMetrics

    def __getattr__(self, name: str):  # backends().songs, .settings, .store ...: the services' own
        return getattr(self.services, name)


def backends() -> Backends:
    return current_app.extensions["msaas"]


def tenant() -> Tenant:
    """Who is asking (rest/guards.py admitted the request as this tenant)."""
    return g.tenant
