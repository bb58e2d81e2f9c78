"""`python -m worker`: run one worker until SIGTERM, serving its metrics on WORKER_METRICS_PORT."""

from __future__ import annotations

from msaas.connections import connect_redis, connect_store
from msaas.jobqueue import JobQueue
from msaas.logbus import LogBus, setup_logging
from msaas.scratch import claim
from msaas.settings import Settings
from msaas.storage import ObjectStore
from worker.loop import Worker
from worker.metrics import WorkerMetrics


def main() -> None:
    settings = Settings.from_env().require_store_credentials()
    connection = connect_redis(settings)
    setup_logging("worker", settings.hostname, settings.log_level, LogBus(connection, settings.log_list))
    claim(settings.work_dir, "worker")  # now, so what a killed worker left is swept before the first job
    queue = JobQueue(connection, settings.worker_queue, settings.demucs_model)
    metrics = WorkerMetrics()
    worker = Worker(
        settings,
        queue,
        ObjectStore(
            connect_store(settings), settings.queue_bucket, settings.output_bucket, settings.retention_days,
            timeout=settings.store_timeout,
        ),
        metrics,
    )
    metrics.serve(settings.worker_metrics_port, settings.bind_host)
    worker.run()


if __name__ == "__main__":
    main()
