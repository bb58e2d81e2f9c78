"""The standard gRPC health checking service (grpc.health.v1), kept current from a background thread.

Two names, as Kubernetes' `grpc:` probes ask them: "" (the server) is SERVING while the process serves
(liveness, like REST's /healthz); "msaas.v1.SeparationService" is SERVING only while Redis and the object
store answer (readiness, like REST's /readyz). Both turn NOT_SERVING when the server starts shutting down,
so no new call is routed to it.
"""

from __future__ import annotations

import logging
import threading

import redis
from grpc_health.v1 import health, health_pb2

from msaas.errors import ServiceError
from msaas.storage import ObjectStore

log = logging.getLogger(__name__)
SERVICE = "msaas.v1.SeparationService"
CHECK_INTERVAL = 5.0  # seconds between checks of Redis and the store; probes come every 10 s
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Readiness:
    def __init__(self, connection: redis.Redis, store: ObjectStore) -> None:
        self.redis = connection
        self.store = store
        self.servicer = health.HealthServicer(experimental_non_blocking=True)
        self.stopping = threading.Event()
        self.servicer.set("", SERVING)
        self.servicer.set(SERVICE, NOT_SERVING)  # until the first check passes

    def ready(self) -> bool:
        try:
            self.redis.ping()
            self.store.ensure_buckets(recheck=True)  # as REST's /readyz asks
        except (redis.RedisError, ServiceError) as error:
            log.warning("not ready: %s", getattr(error, "message", error))
            return False
        return True

    def check(self) -> None:
        if not self.stopping.is_set():
            self.servicer.set(SERVICE, SERVING if self.ready() else NOT_SERVING)

    def start(self) -> None:
        self.check()
        threading.Thread(target=self._run, name="readiness", daemon=True).start()

    def stop(self) -> None:
        self.stopping.set()
        self.servicer.enter_graceful_shutdown()

    def _run(self) -> None:
        while not self.stopping.wait(CHECK_INTERVAL):
            self.check()
