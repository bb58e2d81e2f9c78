"""Named errors of the service, each with the HTTP status and gRPC code it is answered with: the one table both APIs
read (rest/errors.py, rpc/guards.py) and docs/api.md lists (a test holds the three together)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager


class ConfigError(Exception):
    """A setting is missing or malformed; the service must not start."""


class InvalidJob(Exception):
    """A queue entry that is not a job this service can run (it goes to the dead letters, with why)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ServiceError(Exception):
    """A failure a client can be told about: a stable `code`, a human `message`, and (for 429 and 503) the seconds
    after which a retry may succeed."""

    code = "error"
    http_status = 500
    grpc_code = "INTERNAL"  # a grpc.StatusCode name (msaas imports no grpc)
    retry_after: int | None = None

    def __init__(self, message: str, code: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retry_after is not None:
            self.retry_after = retry_after


class BadRequest(ServiceError):
    """The request is malformed, or asks for what the service does not do; its code says what (invalid_option, ...)."""

    code, http_status, grpc_code = "bad_request", 400, "INVALID_ARGUMENT"


class Unauthorized(ServiceError):
    """No API key, or one no tenant holds (or not an admin key, on an admin route)."""

    code, http_status, grpc_code = "unauthorized", 401, "UNAUTHENTICATED"


class NotFound(ServiceError):
    """Never submitted (by this tenant: another tenant's song answers exactly as an unknown one)."""

    code, http_status, grpc_code = "not_found", 404, "NOT_FOUND"


class Conflict(ServiceError):
    """The request contradicts the state it meets (a dead letter whose song was queued again meanwhile)."""

    code, http_status, grpc_code = "conflict", 409, "FAILED_PRECONDITION"


class TooSlow(ServiceError):
    """A client's upload fell behind the minimum rate (BODY_MIN_RATE after BODY_GRACE_SECONDS): time ran out, as
    for a client's own deadline, and the same song sent at a steady pace succeeds."""

    code, http_status, grpc_code = "request_timeout", 408, "DEADLINE_EXCEEDED"


class TooLarge(ServiceError):
    """The request, or one of its fields, is larger than the service accepts."""

    code, http_status, grpc_code = "too_large", 413, "RESOURCE_EXHAUSTED"


class FieldTooLarge(TooLarge):
    """A request's fields other than the song are over their size cap."""

    code = "field_too_large"


class OverLimit(ServiceError):
    """A limit of the client or its tenant (requests a minute, audio a day, songs queued at once) is reached; the
    code names which, and `retry_after` says when it lifts."""

    code, http_status, grpc_code = "too_many_requests", 429, "RESOURCE_EXHAUSTED"
    retry_after = 60


class TooManyCalls(OverLimit):
    """A bound of the server was reached (calls open from one client, watches open): call again later."""

    code = "too_many_calls"
    retry_after = 5


class BackendUnavailable(ServiceError):
    """Redis or the object store cannot be reached; the request may succeed later."""

    code, http_status, grpc_code = "backend_unavailable", 503, "UNAVAILABLE"
    retry_after = 5


class LocalResourceError(ServiceError):
    """This machine's own resources failed the work (a full or read-only WORK_DIR, a quota, too many open
    files): neither the request's fault nor a backing service's outage."""

    code, http_status, grpc_code = "local_resource_unavailable", 503, "UNAVAILABLE"
    retry_after = 5


# Every class a client can be answered with, for the tables derived from them (docs/api.md, both APIs' maps).
ERRORS = (BadRequest, Unauthorized, NotFound, Conflict, TooSlow, TooLarge, FieldTooLarge, OverLimit, TooManyCalls,
          BackendUnavailable, LocalResourceError)


# What the local system answers when its disks or file limits fail us, not when the network does.
LOCAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EMFILE, errno.ENFILE, errno.EACCES})


def local_resource_error(error: BaseException, place: str = "") -> LocalResourceError | None:
    """The LocalResourceError that `error` stands for ("no space left on device in WORK_DIR /x"), if any."""
    if not isinstance(error, OSError) or error.errno not in LOCAL_ERRNOS:
        return None
    what = os.strerror(error.errno).lower()
    if error.errno in (errno.EMFILE, errno.ENFILE):  # a limit of the process or system, not of a place
        return LocalResourceError(what)
    where = place or (f"{error.filename}" if error.filename else "this machine's scratch space")
    return LocalResourceError(f"{what} in {where}")


@contextmanager
def local_resources(place: str) -> Iterator[None]:
    """Raise the OSErrors of local resources met inside as LocalResourceError naming `place`."""
    try:
        yield
    except OSError as error:
        if (local := local_resource_error(error, place)) is not None:
            raise local from error
        raise
