"""The REST service: accepts songs, queues them for the workers and serves the separated tracks."""

from __future__ import annotations

from dataclasses import replace

from flask import Flask

from msaas.connections import connect_api_redis, connect_store
from msaas.deadline import with_redis_budget
from msaas.jobqueue import JobQueue
from msaas.logbus import LogBus, setup_logging
from msaas.scratch import claim
from msaas.settings import Settings
from msaas.songs import Policy, Songs
from msaas.status import SongStatus
from msaas.storage import ObjectStore
from rest import api, errors, guards, limits, metrics
from rest.backends import Backends
from rest.metrics import RestMetrics


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app; without `settings`, read them from the environment (gunicorn: `rest:create_app()`)."""
    settings = (settings or Settings.from_env()).require_store_credentials()
    connection = connect_api_redis(settings)
    setup_logging("rest", settings.hostname, settings.log_level, LogBus(connection, settings.log_list))

    public_store = None
    if settings.s3_public_endpoint:  # presigned links must name the host clients reach, not the in-cluster one
        public_store = connect_store(replace(settings, s3_endpoint=settings.s3_public_endpoint))
    app = Flask(__name__)  # rest/static/ and rest/templates/: the web page
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    queue = JobQueue(connection, settings.worker_queue, settings.demucs_model)
    app.config["MAX_FORM_MEMORY_SIZE"] = limits.MAX_FIELD_BYTES  # a multipart field but the file, refused as it streams
    app.config["MAX_FORM_PARTS"] = limits.MAX_FORM_PARTS
    app.wsgi_app = limits.BodyDeadline(app.wsgi_app, settings.body_grace_seconds, settings.body_min_rate)
    # All of a request's Redis commands share REDIS_TIMEOUT; then 503 with Retry-After (rest/errors.py).
    app.wsgi_app = with_redis_budget(app.wsgi_app, settings.redis_timeout)
    claim(settings.work_dir, "rest")  # now, so the spool files of a killed REST process are swept at start-up
    instruments = RestMetrics(queue, settings.prometheus_multiproc_dir)
    store = ObjectStore(
        connect_store(settings), settings.queue_bucket, settings.output_bucket, settings.retention_days, public_store,
        settings.store_timeout,
    )
    status = SongStatus(connection)
    policy = Policy(settings.demucs_model, settings.max_song_seconds, settings.callback_allow_hosts)
    app.extensions["msaas"] = Backends(
        settings=settings,
        redis=connection,
        queue=queue,
        store=store,
        status=status,
        songs=Songs(queue, store, status, policy),
        metrics=instruments,
    )
    app.register_blueprint(api.blueprint)
    metrics.register(app, instruments)
    errors.register(app)
    limits.register(app)
    guards.register(app, settings)
    return app
