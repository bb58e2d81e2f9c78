"""The gRPC service's Prometheus metrics, served on GRPC_METRICS_PORT like a worker's: calls by method and
code, and REST's counterparts for what it accepts (same names, so a dashboard sums both front doors; the
`job`/`pod` labels Prometheus adds tell them apart). The queue's depths are REST's to report."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from msaas.v1 import separation_pb2 as pb

log = logging.getLogger(__name__)
UPLOAD_BUCKETS = (64 * 1024, 256 * 1024, 1 << 20, 4 << 20, 8 << 20, 16 << 20, 32 << 20, 64 << 20)
METHODS = tuple(pb.DESCRIPTOR.services_by_name["SeparationService"].methods_by_name)


class RpcMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs_enqueued = Counter("msaas_jobs_enqueued", "jobs put on the worker queue", registry=self.registry)
        self.upload_bytes = Histogram(
            "msaas_upload_bytes", "size of each song submitted, in bytes", buckets=UPLOAD_BUCKETS,
            registry=self.registry,
        )
        # Labels from closed sets: the contract's methods and gRPC's status code names.
        self.requests = Counter(
            "msaas_grpc_requests", "gRPC calls answered, by method and status code", ["method", "code"],
            registry=self.registry,
        )

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        """Serve /metrics on `host`:`port` from a daemon thread; port 0: not served. The service runs without it."""
        if not port:
            return
        try:
            start_http_server(port, addr=host, registry=self.registry)
        except OSError as error:
            log.warning("metrics not served: %s:%d: %s", host, port, error)
            return
        log.info("metrics served on %s:%d", host, port)
