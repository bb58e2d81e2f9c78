"""`python -m worker`: run one worker until SIGTERM."""

from __future__ import annotations

from msaas.connections import connect_redis, connect_store
from msaas.jobqueue import JobQueue
from msaas.logbus import LogBus, setup_logging
from msaas.settings import Settings
from msaas.status import SongStatus
from msaas.storage import ObjectStore
from worker.loop import Worker


def main() -> None:
    settings = Settings.from_env().require_store_credentials()
    connection = connect_redis(settings)
    setup_logging("worker", settings.hostname, settings.log_level, LogBus(connection, settings.log_list))
    Worker(
        settings,
        JobQueue(connection, settings.worker_queue),
        ObjectStore(connect_store(settings), settings.queue_bucket, settings.output_bucket, settings.retention_days),
        SongStatus(connection),
    ).run()


if __name__ == "__main__":
    main()
