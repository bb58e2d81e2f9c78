"""The REST service: accepts songs, queues them for the workers and serves the separated tracks."""

from __future__ import annotations

from flask import Flask

from msaas.connections import connect_redis, connect_store
from msaas.jobqueue import JobQueue
from msaas.logbus import LogBus, setup_logging
from msaas.settings import Settings
from msaas.status import SongStatus
from msaas.storage import ObjectStore
from rest import api, errors
from rest.backends import Backends


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app; without `settings`, read them from the environment (gunicorn: `rest:create_app()`)."""
    settings = (settings or Settings.from_env()).require_store_credentials()
    connection = connect_redis(settings)
    setup_logging("rest", settings.hostname, settings.log_level, LogBus(connection, settings.log_list))

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.extensions["msaas"] = Backends(
        settings=settings,
        redis=connection,
        queue=JobQueue(connection, settings.worker_queue),
        store=ObjectStore(connect_store(settings), settings.queue_bucket, settings.output_bucket),
        status=SongStatus(connection),
    )
    app.register_blueprint(api.blueprint)
    errors.register(app)
    return app
