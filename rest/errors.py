"""Every error the API answers, in one shape: `{"error": "<code>", "message": "<sentence>"}`. The service's named
errors carry their own status (msaas/errors.py, the one table); this maps what other libraries raise."""

from __future__ import annotations

import logging

import redis
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from msaas.errors import BackendUnavailable, ServiceError, local_resource_error

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, retry_after: int | None = None):
    response = jsonify(error=code, message=message)
    response.status_code = status
    if status == 503 and retry_after is None:
        retry_after = BackendUnavailable.retry_after
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="msaas"'
    return response


def register(app: Flask) -> None:
    limit = app.config["MAX_CONTENT_LENGTH"]

    @app.errorhandler(ServiceError)
    def service_error(error: ServiceError):
        if error.http_status == 503:
            log.warning("%s", error.message)
        return error_response(error.http_status, error.code, error.message, error.retry_after)

    @app.errorhandler(redis.RedisError)
    def redis_error(error: redis.RedisError):
        log.warning("redis unreachable: %s", error)
        return error_response(503, "backend_unavailable", f"the job queue (Redis) is unreachable: {error}")

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error: RequestEntityTooLarge):
        return error_response(413, "too_large", f"request body is larger than the limit of {limit} bytes")

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        code = (error.name or "error").lower().replace(" ", "_")
        return error_response(error.code or 500, code, error.description or error.name)

    @app.errorhandler(OSError)
    def os_error(error: OSError):
        # A full disk or exhausted file limit met outside the places that name it (werkzeug's own temporary
        # files, say) is still this machine's passing trouble, not a bug: 503, and the client retries.
        if (local := local_resource_error(error)) is not None:
            return service_error(local)
        return unexpected(error)

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "the server failed to handle this request")
