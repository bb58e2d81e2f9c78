"""What every call of the SeparationService passes, in one place: the API key and the rate limit before it,
and after it the one table from the service's named errors to gRPC status codes, and the count of calls by
method and code. The health and reflection services are not guarded: probes and tools need no key."""

from __future__ import annotations

import functools
import inspect
import logging
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc
import redis

from msaas.access import RateLimit, api_keys, bearer_token, key_accepted, key_client
from msaas.errors import BackendUnavailable, BadRequest, NotFound, ServiceError, TooLarge
from rpc.metrics import RpcMetrics

log = logging.getLogger(__name__)
Code = grpc.StatusCode
# The service's errors as gRPC codes; REST's table (rest/errors.py) maps the same classes to 400, 413, 404, 503.
CODES = {
    BadRequest: Code.INVALID_ARGUMENT,
    TooLarge: Code.RESOURCE_EXHAUSTED,
    NotFound: Code.NOT_FOUND,
    BackendUnavailable: Code.UNAVAILABLE,
}
UNAUTHENTICATED = "a valid API key is required: send 'authorization: Bearer <key>' metadata"
ERROR_KEY = "msaas-error"  # trailing metadata: REST's error code ("invalid_option"), for clients that show it


class Refused(Exception):
    """A call turned away before it runs: no key, or over the rate limit."""

    def __init__(self, code: grpc.StatusCode, error: str, message: str, **metadata: str) -> None:
        super().__init__(message)
        self.code, self.error, self.message, self.metadata = code, error, message, metadata


class Guard:
    def __init__(self, api_keys_setting: str, rate_limit: RateLimit, metrics: RpcMetrics) -> None:
        self.keys = api_keys(api_keys_setting)
        self.rate_limit = rate_limit
        self.metrics = metrics

    def admit(self, context: grpc.ServicerContext) -> None:
        client = _peer_address(context.peer())
        if self.keys:
            metadata = dict(context.invocation_metadata())
            token = bearer_token(metadata.get("authorization", ""))
            if not key_accepted(token, self.keys):
                raise Refused(Code.UNAUTHENTICATED, "unauthorized", UNAUTHENTICATED)
            client = key_client(token)
        wait = self.rate_limit.over(client)
        if wait is not None:
            raise Refused(Code.RESOURCE_EXHAUSTED, "too_many_requests", self.rate_limit.message(),
                          **{"retry-after": str(wait)})

    @contextmanager
    def call(self, method: str, context: grpc.ServicerContext) -> Iterator[None]:
        """Admit the call, run it, and answer its failure with the code that means it."""
        code = Code.OK
        try:
            self.admit(context)
            yield
            if not context.is_active():  # a watch or download that stopped because its client gave up
                code = _gone(context)
        except Refused as refused:
            code = refused.code
            _abort(context, code, refused.error, refused.message, refused.metadata)
        except ServiceError as error:
            code = next(status for kind, status in CODES.items() if isinstance(error, kind))
            if code is Code.UNAVAILABLE:
                log.warning("%s", error.message)
            _abort(context, code, error.code, error.message)
        except redis.RedisError as error:
            code = Code.UNAVAILABLE
            log.warning("redis unreachable: %s", error)
            _abort(context, code, "backend_unavailable", f"the job queue (Redis) is unreachable: {error}")
        except GeneratorExit:  # a stream closed under way: its client cancelled, or its deadline passed
            code = _gone(context)
            raise
        except Exception:
            if not context.is_active():  # the client went away mid-call (an upload cut off): nothing to answer
                code = _gone(context)
                raise
            code = Code.INTERNAL
            log.exception("unhandled error in %s", method)
            _abort(context, code, "internal_error", "the server failed to handle this request")
        finally:
            self.metrics.requests.labels(method, code.name).inc()


def guarded(handler: Callable) -> Callable:
    """Run a servicer method (unary or server-streaming) inside `self.guard.call`."""
    method = handler.__name__
    if inspect.isgeneratorfunction(handler):
        @functools.wraps(handler)
        def streaming(self, request, context):
            with self.guard.call(method, context):
                yield from handler(self, request, context)
        return streaming

    @functools.wraps(handler)
    def unary(self, request, context):
        with self.guard.call(method, context):
            return handler(self, request, context)
    return unary


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, error: str, message: str,
           metadata: dict[str, str] | None = None) -> None:
    context.set_trailing_metadata(((ERROR_KEY, error), *(metadata or {}).items()))
    context.abort(code, message)


def _gone(context: grpc.ServicerContext) -> grpc.StatusCode:
    """Why a call ended without its answer: the client's deadline passed, or it cancelled."""
    remaining = context.time_remaining()
    return Code.DEADLINE_EXCEEDED if remaining is not None and remaining <= 0 else Code.CANCELLED


def _peer_address(peer: str) -> str:
    """`ipv4:10.0.0.7:53514` -> `10.0.0.7`, `ipv6:%5B::1%5D:53514` -> `::1`: the client's address as REST sees
    it, so a client's REST requests and gRPC calls count against one limit."""
    kind, _, rest = urllib.parse.unquote(peer).partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer
    return rest.rsplit(":", 1)[0].strip("[]")
