"""The REST service: accepts songs, queues them for the workers and serves the separated tracks."""

from __future__ import annotations

from dataclasses import replace

from flask import Flask

from msaas.connections import connect_redis, connect_store
from msaas.jobqueue import JobQueue
from msaas.logbus import LogBus, setup_logging
from msaas.settings import Settings
from msaas.status import SongStatus
from msaas.storage import ObjectStore
from rest import api, errors, guards, metrics
from rest.backends import Backends
from rest.metrics import RestMetrics


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app; without `settings`, read them from the environment (gunicorn: `rest:create_app()`)."""
    settings = (settings or Settings.from_env()).require_store_credentials()
    connection = connect_redis(settings)
    setup_logging("rest", settings.hostname, settings.log_level, LogBus(connection, settings.log_list))

    public_store = None
    if settings.s3_public_endpoint:  # presigned links must name the host clients reach, not the in-cluster one
        public_store = connect_store(replace(settings, s3_endpoint=settings.s3_public_endpoint))
    app = Flask(__name__)  # rest/static/ and rest/templates/: the web page
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    queue = JobQueue(connection, settings.worker_queue)
    instruments = RestMetrics(queue, settings.prometheus_multiproc_dir)
    app.extensions["msaas"] = Backends(
        settings=settings,
        redis=connection,
        queue=queue,
        store=ObjectStore(
            connect_store(settings), settings.queue_bucket, settings.output_bucket,
            settings.retention_days, public_store, settings.store_timeout,
        ),
        status=SongStatus(connection),
        metrics=instruments,
    )
    app.register_blueprint(api.blueprint)
    metrics.register(app, instruments)
    errors.register(app)
    guards.register(app, settings)
    return app
