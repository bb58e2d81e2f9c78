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

from msaas.access import Access, Refused
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
# msaas.access' refusals, by their code; REST answers them 401 and 429.
REFUSALS = {"unauthorized": Code.UNAUTHENTICATED, "too_many_requests": Code.RESOURCE_EXHAUSTED}
HOW_TO_SEND_A_KEY = "'authorization: Bearer <key>' metadata"
ERROR_KEY = "msaas-error"  # trailing metadata: REST's error code ("invalid_option"), for clients that show it


class Guard:
    def __init__(self, access: Access, metrics: RpcMetrics) -> None:
        self.access = access
        self.metrics = metrics

    @contextmanager
    def call(self, method: str, context: grpc.ServicerContext) -> Iterator[None]:
        """Admit the call, run it, and answer its failure with the code that means it."""
        code = Code.OK
        try:
            metadata = dict(context.invocation_metadata())
            self.access.admit(_peer_address(context.peer()), metadata.get("authorization", ""))
            yield
            if not context.is_active():  # a watch or download that stopped because its client gave up
                code = _gone(context)
        except Refused as refused:
            code = REFUSALS[refused.code]
            retry = {"retry-after": str(refused.retry_after)} if refused.retry_after is not None else {}
            _abort(context, code, refused.code, refused.message, retry)
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
