"""What the services' Prometheus metrics share: the counters of what a front door accepts (REST and gRPC use the same
names, so a dashboard sums both), and serving a registry on a port of its own (worker, rpc)."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

log = logging.getLogger(__name__)
UPLOAD_BUCKETS = (64 * 1024, 256 * 1024, 1 << 20, 4 << 20, 8 << 20, 16 << 20, 32 << 20, 64 << 20)


def accepted(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    """`msaas_jobs_enqueued` and `msaas_upload_bytes` on `registry`."""
    jobs = Counter("msaas_jobs_enqueued", "jobs put on the worker queue", registry=registry)
    sizes = Histogram("msaas_upload_bytes", "size of each song submitted, in bytes", buckets=UPLOAD_BUCKETS,
                      registry=registry)
    return jobs, sizes


def serve(registry: CollectorRegistry, port: int, host: str = "0.0.0.0") -> None:
    """Serve /metrics on `host`:`port` from a daemon thread; port 0: not served. The service runs without it."""
    if not port:
        return
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        log.warning("metrics not served: %s:%d: %s", host, port, error)
        return
    log.info("metrics served on %s:%d", host, port)
