"""The gRPC service: the REST API's operations over gRPC (proto/msaas/v1/separation.proto), streamed both ways,
beside the standard health checking and reflection services."""

from __future__ import annotations

from concurrent import futures
from dataclasses import dataclass, replace

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from msaas.access import Access
from msaas.connections import connect_redis, connect_store
from msaas.jobqueue import JobQueue
from msaas.logbus import LogBus, setup_logging
from msaas.settings import Settings
from msaas.songs import Policy, Songs
from msaas.status import SongStatus
from msaas.storage import ObjectStore
from msaas.uploads import CHUNK
from msaas.v1 import separation_pb2 as pb
from msaas.v1 import separation_pb2_grpc as pb_grpc
from rpc.guards import HOW_TO_SEND_A_KEY, Guard
from rpc.health import Readiness
from rpc.metrics import RpcMetrics
from rpc.service import SeparationServicer

# Messages are chunks of 256 KiB; a message may also carry the submission's header (options, callback data)
# or a status, so the limit leaves room above one chunk, and no more: nothing arrives whole in one message.
MAX_MESSAGE_BYTES = CHUNK + 256 * 1024
# Each call holds a thread while it runs, watches for as long as the song takes: this many at once, and
# as many more waiting, before new calls are answered RESOURCE_EXHAUSTED.
THREADS = 64
SHUTDOWN_GRACE = 20.0  # seconds running calls get to finish on SIGTERM (the pod gives 30)


@dataclass
class RpcServer:
    server: grpc.Server
    port: int  # the port bound (settings' GRPC_PORT, or a free one for 0)
    servicer: SeparationServicer
    readiness: Readiness
    metrics: RpcMetrics

    def start(self) -> None:
        self.server.start()
        self.readiness.start()

    def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Refuse new calls, end watches, give the rest `grace` seconds, then cancel what still runs."""
        self.readiness.stop()
        self.servicer.stopping.set()
        self.server.stop(grace).wait()


def create_server(settings: Settings | None = None, host: str | None = None) -> RpcServer:
    """Build the server, bound (to `host`, else BIND_HOST) but not started; without `settings`, read them from
    the environment."""
    settings = (settings or Settings.from_env()).require_store_credentials()
    connection = connect_redis(settings)
    setup_logging("rpc", settings.hostname, settings.log_level, LogBus(connection, settings.log_list))
    public_store = None
    if settings.s3_public_endpoint:  # presigned links must name the host clients reach, not the in-cluster one
        public_store = connect_store(replace(settings, s3_endpoint=settings.s3_public_endpoint))
    queue = JobQueue(connection, settings.worker_queue, settings.demucs_model)
    store = ObjectStore(
        connect_store(settings), settings.queue_bucket, settings.output_bucket, settings.retention_days, public_store,
        settings.store_timeout,
    )
    policy = Policy(settings.demucs_model, settings.max_song_seconds, settings.callback_allow_hosts)
    songs = Songs(queue, store, SongStatus(connection), policy)
    metrics = RpcMetrics()
    guard = Guard(Access(connection, settings.api_keys, settings.rate_limit_per_minute, HOW_TO_SEND_A_KEY), metrics)
    servicer = SeparationServicer(songs, guard, metrics, settings)
    readiness = Readiness(connection, store)

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="rpc"),
        maximum_concurrent_rpcs=2 * THREADS,
        options=[
            # Flow control: a client may send at most one chunk ahead of what the server has taken in. gRPC's
            # default lets the window grow with the measured bandwidth-delay product (BDP probes), and on a fast
            # link the server then buffered 10-20 MB of each large upload (bench/b7_grpc.py). A fixed window
            # of a chunk keeps an upload's memory to about a chunk, at the cost of throughput over long
            # round trips (256 KiB per round trip: 5 MB/s at 50 ms).
            ("grpc.http2.bdp_probe", 0),
            ("grpc.http2.lookahead_bytes", CHUNK),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),  # a second server on a port in use fails, never shares it
        ],
    )
    pb_grpc.add_SeparationServiceServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(readiness.servicer, server)
    reflection.enable_server_reflection((
        pb.DESCRIPTOR.services_by_name["SeparationService"].full_name,
        "grpc.health.v1.Health",
        reflection.SERVICE_NAME,
    ), server)
    port = server.add_insecure_port(f"{host or settings.bind_host}:{settings.grpc_port}")
    return RpcServer(server, port, servicer, readiness, metrics)
