"""Named errors of the service. Each API maps each class to one status in one place (rest/errors.py)."""

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
    """A failure a client can be told about: a stable `code` and a human `message`."""

    code = "error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BadRequest(ServiceError):
    code = "bad_request"


class TooLarge(ServiceError):
    """The request, or one of its fields, is larger than the service accepts."""

    code = "too_large"
class FieldTooLarge(TooLarge):
    """A request's fields other than the song are over their size cap."""

    code = "field_too_large"


class NotFound(ServiceError):
    code = "not_found"


class BackendUnavailable(ServiceError):
    """Redis or the object store cannot be reached; the request may succeed later."""

    code = "backend_unavailable"


class LocalResourceError(ServiceError):
    """This machine's own resources failed the work (a full or read-only WORK_DIR, a quota, too many open
    files): neither the request's fault nor a backing service's outage."""

    code = "local_resource_unavailable"


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
