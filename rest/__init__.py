"""The REST service: accepts songs, queues them for the workers and serves the separated tracks."""

from __future__ import annotations

from flask import Flask

from msaas.deadline import with_redis_budget
from msaas.logbus import LogBus, setup_logging
from msaas.scratch import claim
from msaas.services import build
from msaas.settings import Settings
from rest import admin, api, catalogue, errors, guards, limits, metrics, mixes
from rest.backends import Backends
from rest.metrics import RestMetrics
from rest.send_deadline import SendDeadline


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app; without `settings`, read them from the environment (gunicorn: `rest:create_app()`)."""
    settings = (settings or Settings.from_env()).require_store_credentials()
    services = build(settings, "'Authorization: Bearer <key>'")
    setup_logging("rest", settings.hostname, settings.log_level, LogBus(services.redis, settings.log_list))

    app = Flask(__name__)  # rest/static/ and rest/templates/: the web page
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.config["MAX_FORM_MEMORY_SIZE"] = limits.MAX_FIELD_BYTES  # a multipart field but the file, refused as it streams
    app.config["MAX_FORM_PARTS"] = limits.MAX_FORM_PARTS
    app.wsgi_app = limits.BodyDeadline(app.wsgi_app, settings.body_grace_seconds, settings.body_min_rate)
    app.wsgi_app = SendDeadline(app.wsgi_app, settings.body_grace_seconds, settings.body_min_rate)  # answers, too
    # All of a request's Redis commands share REDIS_TIMEOUT; then 503 with Retry-After (rest/errors.py).
    app.wsgi_app = with_redis_budget(app.wsgi_app, settings.redis_timeout)
    claim(settings.work_dir, "rest")  # now, so the spool files of a killed REST process are swept at start-up
    instruments = RestMetrics(services.queue, services.tenants, settings.prometheus_multiproc_dir)
    app.extensions["msaas"] = Backends(services, instruments)
    app.register_blueprint(api.blueprint)
    app.register_blueprint(admin.blueprint)
    app.register_blueprint(catalogue.blueprint)
    app.register_blueprint(mixes.blueprint)
    metrics.register(app, instruments)
    errors.register(app)
    limits.register(app)
    guards.register(app)
    return app
