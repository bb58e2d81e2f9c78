"""The standard gRPC health checking service (grpc.health.v1), answered on the event loop from what a background
check last found.

Two names, as Kubernetes' `grpc:` probes ask them: "" (the server) is SERVING while the process serves
(liveness, like REST's /healthz: it never waits on Redis or anything else); "msaas.v1.SeparationService" is
SERVING only while Redis and the object store answer (readiness, like REST's /readyz). Both turn NOT_SERVING when
the server starts shutting down, so no new call is routed to it.

The check runs on a thread of its own, never queued behind calls' work, with a Redis budget of REDIS_TIMEOUT; one
that takes longer than CHECK_TIMEOUT (a store that does not answer) counts as not ready while it goes on.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import redis
from grpc_health.v1 import health, health_pb2

from msaas.deadline import spending_redis_budget
from msaas.errors import ServiceError
from msaas.storage import ObjectStore

log = logging.getLogger(__name__)
SERVICE = "msaas.v1.SeparationService"
CHECK_INTERVAL = 5.0  # seconds between checks of Redis and the store; probes come every 5 to 10 s
CHECK_TIMEOUT = 5.0  # a check still running after this long says: not ready
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Readiness:
    def __init__(self, connection: redis.Redis, store: ObjectStore, redis_timeout: float) -> None:
        self.redis = connection
        self.store = store
        self.redis_timeout = redis_timeout
        self.servicer = health.aio.HealthServicer()  # "" starts SERVING
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="rpc-readiness")
        self._check: asyncio.Future | None = None
        self._task: asyncio.Task | None = None

    def ready(self) -> bool:
        try:
            with spending_redis_budget(self.redis_timeout):
                self.redis.ping()
            self.store.ensure_buckets(recheck=True)  # as REST's /readyz asks
        except (redis.RedisError, ServiceError) as error:
            log.warning("not ready: %s", getattr(error, "message", error))
            return False
        return True

    async def check(self) -> None:
        if self._check is None or self._check.done():  # else the last check is still waiting: not ready meanwhile
            self._check = asyncio.get_running_loop().run_in_executor(self._thread, self.ready)
        try:
            ready = await asyncio.wait_for(asyncio.shield(self._check), CHECK_TIMEOUT)
        except TimeoutError:
            ready = False
        await self.servicer.set(SERVICE, SERVING if ready else NOT_SERVING)

    async def start(self) -> None:
        await self.servicer.set(SERVICE, NOT_SERVING)  # until the first check passes
        await self.check()
        self._task = asyncio.create_task(self._run(), name="readiness")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.servicer.enter_graceful_shutdown()
        self._thread.shutdown(wait=False)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_INTERVAL)
            await self.check()
