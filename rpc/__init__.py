"""The gRPC service: the REST API's operations over gRPC (proto/msaas/v1/separation.proto), streamed both ways,
beside the standard health checking and reflection services.

It runs on grpc.aio, an asyncio event loop: a call waiting on its client (an upload, a watch) holds a coroutine,
not a thread, and blocking work (Redis, the object store, checking an upload) runs on a bounded pool of threads
(rpc/blocking.py), so the loop, and the health service on it, is always free to answer. No bound of the server
applies to health checks: the SeparationService's are this server's own (rpc/guards.py, rpc/watches.py).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from msaas.logbus import LogBus, setup_logging
from msaas.services import build
from msaas.settings import Settings
from msaas.uploads import CHUNK
from msaas.v1 import separation_pb2 as pb
from rpc.admin import AdminServicer
from rpc.blocking import Blocking, LogThread
from rpc.guards import HOW_TO_SEND_A_KEY, Guard, add_service
from rpc.health import Readiness
from rpc.messages import status_message
from rpc.metrics import RpcMetrics
from rpc.service import SeparationServicer
from rpc.watches import Watches

T = TypeVar("T")
# Messages are chunks of 256 KiB; a message may also carry the submission's header (options, callback data)
# or a status, so the limit leaves room above one chunk, and no more: nothing arrives whole in one message.
MAX_MESSAGE_BYTES = CHUNK + 256 * 1024
# Threads for blocking work, shared by every call. A call holds one only while Redis, the store or the upload
# check works for it, each wait bounded (REDIS_TIMEOUT, STORE_TIMEOUT); waiting on its client, it holds none.
THREADS = 32
SHUTDOWN_GRACE = 20.0  # seconds running calls get to finish on SIGTERM (the pod gives 30)
SERVICES = (
    pb.DESCRIPTOR.services_by_name["SeparationService"].full_name,
    pb.DESCRIPTOR.services_by_name["AdminService"].full_name,
    "grpc.health.v1.Health",
    reflection.SERVICE_NAME,
)
OPTIONS = [
    # Flow control: a client may send at most one chunk ahead of what the server has taken in. gRPC's default
    # lets the window grow with the measured bandwidth-delay product (BDP probes), and on a fast link the server
    # then buffered 10-20 MB of each large upload (bench/b7_grpc.py). A fixed window of a chunk keeps an
    # upload's memory to about a chunk, at the cost of throughput over long round trips (256 KiB per round
    # trip: 5 MB/s at 50 ms).
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", CHUNK),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),  # a second server on a port in use fails, never shares it
]


class RpcServer:
    """The server on an event loop in a thread of its own, so that synchronous code (`python -m rpc`, the tests)
    starts and stops it; bound when built, serving once started."""

    def __init__(self, address: str, servicer: SeparationServicer, admin: AdminServicer, readiness: Readiness,
                 metrics: RpcMetrics, blocking: Blocking, logs: LogThread) -> None:
        self.servicer, self.admin, self.readiness, self.metrics = servicer, admin, readiness, metrics
        self.blocking, self.logs = blocking, logs
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="rpc-loop", daemon=True)
        self._thread.start()
        try:
            self.server, self.port = self._run(self._bind(address))  # the port bound (a free one for port 0)
        except BaseException:
            self._close()
            raise

    def start(self) -> None:
        self._run(self._start())

    def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Refuse new calls, end watches, give the rest `grace` seconds, then cancel what still runs."""
        try:
            self._run(self._stop(grace))
        finally:
            self._close()

    async def _bind(self, address: str) -> tuple[grpc.aio.Server, int]:
        # No maximum_concurrent_rpcs: it would refuse health checks too. The SeparationService's bounds are
        # its own (calls per client, watches); a waiting call costs a coroutine.
        server = grpc.aio.server(options=OPTIONS)
        add_service(self.servicer, server)
        add_service(self.admin, server, "AdminService")
        health_pb2_grpc.add_HealthServicer_to_server(self.readiness.servicer, server)
        reflection.enable_server_reflection(SERVICES, server)
        return server, server.add_insecure_port(address)

    async def _start(self) -> None:
        await self.server.start()
        await self.readiness.start()

    async def _stop(self, grace: float) -> None:
        await self.readiness.stop()
        self.servicer.watches.stop()
        await self.server.stop(grace)
        # Calls still running are cancelled and awaited, so each ends through its guard here, not when its
        # coroutine is collected after the loop is gone.
        running = asyncio.all_tasks() - {asyncio.current_task()}
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=5)
        await self.loop.shutdown_asyncgens()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def _close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()
        self.blocking.shutdown()
        self.logs.stop()


def create_server(settings: Settings | None = None, host: str | None = None) -> RpcServer:
    """Build the server, bound (to `host`, else BIND_HOST) but not started; without `settings`, read them from
    the environment."""
    settings = (settings or Settings.from_env()).require_store_credentials()
    services = build(settings, HOW_TO_SEND_A_KEY)
    setup_logging("rpc", settings.hostname, settings.log_level, LogBus(services.redis, settings.log_list))
    logs = LogThread()  # the loop must not wait on Redis even to log
    logs.start()
    songs = services.songs
    metrics = RpcMetrics()
    blocking = Blocking(THREADS)
    guard = Guard(services.access, metrics, blocking, settings.redis_timeout, settings.grpc_max_calls_per_client)
    watches = Watches(songs.describe, status_message, blocking, settings.redis_timeout, settings.grpc_max_watches)
    servicer = SeparationServicer(songs, guard, metrics, settings, blocking, watches)
    admin = AdminServicer(services.admin, services.access, guard, blocking)
    readiness = Readiness(services.redis, services.store, settings.redis_timeout)
    try:
        return RpcServer(f"{host or settings.bind_host}:{settings.grpc_port}", servicer, admin, readiness, metrics,
                         blocking, logs)
    except BaseException:
        logs.stop()
        raise
