"""The gRPC service's Prometheus metrics, served on GRPC_METRICS_PORT like a worker's: calls by method and
code, and REST's counterparts for what it accepts (same names, so a dashboard sums both front doors; the
`job`/`pod` labels Prometheus adds tell them apart). The queue's depths are REST's to report."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from msaas.metrics import accepted, serve
from msaas.v1 import separation_pb2 as pb

METHODS = tuple(pb.DESCRIPTOR.services_by_name["SeparationService"].methods_by_name)


class RpcMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs_enqueued, self.upload_bytes = accepted(self.registry)
        # Labels from closed sets: the contract's methods and gRPC's status code names.
        self.requests = Counter(
            "msaas_grpc_requests", "gRPC calls answered, by method and status code", ["method", "code"],
            registry=self.registry,
        )

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        serve(self.registry, port, host)
