"""Named errors of the service. Each API maps each class to one status in one place (rest/errors.py)."""


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
