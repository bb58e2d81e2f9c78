"""REST's Prometheus metrics, served at /metrics: jobs enqueued, upload sizes, requests, and the queue's depths
(counters of the queue's sorted sets, one ZCARD each: a scrape costs the same whatever is queued or stored).

Under gunicorn every worker process counts on its own; with `PROMETHEUS_MULTIPROC_DIR` set (gunicorn.conf.py
sets it) each writes its samples to files there and a scrape sums them, whichever process answers it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import redis
from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from msaas.jobqueue import JobQueue
from msaas.metrics import accepted
from msaas.tenants import Tenants

blueprint = Blueprint("metrics", __name__)
# Label values come from closed sets only: every new value is a new series in every scrape, for ever.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})  # anything else: "other"


class QueueDepths:
    """The queue's lengths, read from Redis when scraped, so every REST replica reports the same truth."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue

    def describe(self) -> list[GaugeMetricFamily]:
        return list(self._families(0, 0, 0, {}))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            depths = self.queue.depths()
            by_engine = self.queue.waiting_by_engine()
        except redis.RedisError:
            return  # an outage shows as missing series (and as 503s), not as a failed scrape
        yield from self._families(depths["waiting"] + depths["delayed"], depths["taken"], depths["dead"], by_engine)

    @staticmethod
    def _families(waiting: int, processing: int, dead: int,
                  by_engine: dict[str, int]) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("msaas_queue_depth", "jobs waiting for a worker (or for a retry)", value=waiting)
        yield GaugeMetricFamily("msaas_processing_depth", "jobs held by workers", value=processing)
        yield GaugeMetricFamily("msaas_dead_letter_depth", "jobs in the dead letters", value=dead)
        # One series per engine of the catalogue (a closed set): what each worker pool's scaler reads.
        engine_depth = GaugeMetricFamily("msaas_engine_queue_depth", "jobs waiting in the lanes of an engine",
                                         labels=["engine"])
        for engine, count in by_engine.items():
            engine_depth.add_metric([engine], count)
        yield engine_depth


class RestMetrics:
    def __init__(self, queue: JobQueue, tenants: Tenants, multiprocess_dir: Path | None = None) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir
        self.queue_depths = QueueDepths(queue)
        if multiprocess_dir is None:
            self.registry.register(self.queue_depths)
        self.jobs_enqueued, self.upload_bytes = accepted(self.registry)
        self.requests = Counter(
            "msaas_http_requests", "requests answered, by route and status", ["method", "route", "status"],
            registry=self.registry,
        )
        self.tenants = tenants
        self.tenant_songs = Counter("msaas_tenant_songs", "songs submitted, by tenant", ["tenant"],
                                    registry=self.registry)

    def submitted(self, tenant: str) -> None:
        """A song a tenant submitted; labelled only with configured names, so the series stay bounded."""
        known = tenant in self.tenants.current().names or tenant in ("open", "admin")
        self.tenant_songs.labels(tenant if known else "other").inc()

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The text a scrape gets, in the format its Accept header asks for, and its content type."""
        registry = self.registry
        if self.multiprocess_dir is not None:
            # Built per scrape, as prometheus-client's multiprocess mode requires: it reads every process' files.
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=str(self.multiprocess_dir))
            registry.register(self.queue_depths)
        encode, content_type = choose_encoder(accept)
        return encode(registry), content_type


def register(app: Flask, metrics: RestMetrics) -> None:
    app.extensions["msaas_metrics"] = metrics
    app.register_blueprint(blueprint)

    @app.after_request
    def count(response: Response) -> Response:
        metrics.requests.labels(*request_labels(response.status_code)).inc()
        return response


def request_labels(status: int) -> tuple[str, str, str]:
    """The method, the route pattern (never the raw path) and the status, each from a closed set."""
    method = request.method if request.method in METHODS else "other"
    route = request.url_rule.rule if request.url_rule else "unmatched"
    return method, route, str(status) if 100 <= status <= 599 else "other"


@blueprint.get("/metrics")
def scrape() -> Response:
    body, content_type = current_app.extensions["msaas_metrics"].exposition(request.headers.get("Accept", ""))
    return Response(body, content_type=content_type)
