"""`python -m rpc`: serve the gRPC API on GRPC_PORT until SIGTERM, its metrics on GRPC_METRICS_PORT."""

from __future__ import annotations

import logging
import signal
import threading

from msaas.settings import Settings
from rpc import SHUTDOWN_GRACE, create_server

log = logging.getLogger("rpc")


def main() -> None:
    settings = Settings.from_env()
    rpc = create_server(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    rpc.metrics.serve(settings.grpc_metrics_port, settings.bind_host)
    rpc.start()
    log.info("gRPC service listening on port %d", rpc.port)
    stop.wait()
    log.info("stopping: running calls get up to %.0f s", SHUTDOWN_GRACE)
    rpc.stop()


if __name__ == "__main__":
    main()
