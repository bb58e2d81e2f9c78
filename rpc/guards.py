"""What every call of the SeparationService passes, in one place: this server's bound on calls per client, the
API key and the rate limit before it, a Redis budget for all of it, and after it the one table from the
service's named errors to gRPC status codes, and the count of calls by method and code. The health and
reflection services are not guarded: probes and tools need no key, and no bound ever refuses them."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import grpc
import redis
from google.protobuf.message import DecodeError

from msaas.access import Access
from msaas.deadline import spending_redis_budget
from msaas.errors import BadRequest, ServiceError, TooManyCalls
from msaas.tenants import Tenant
from msaas.v1 import separation_pb2 as pb
from rpc.blocking import Blocking
from rpc.metrics import RpcMetrics

log = logging.getLogger(__name__)
Code = grpc.StatusCode


# What `guarded` admitted the call as: the handler, and the blocking work it starts (which copies the context), read it.
TENANT: contextvars.ContextVar[Tenant] = contextvars.ContextVar("tenant")
HOW_TO_SEND_A_KEY = "'authorization: Bearer <key>' metadata"
ERROR_KEY = "msaas-error"  # trailing metadata: REST's error code ("invalid_option"), for clients that show it
DEADLINE_SLACK = 0.1  # seconds: grpc.aio cancels a call a few milliseconds before its deadline by its own clock


def tenant() -> Tenant:
    """The tenant the call at hand was admitted as."""
    return TENANT.get()


class Malformed:
    """A request message that does not parse (bad UTF-8, nested too deep, a corrupt wire format); the guard answers
    it INVALID_ARGUMENT, as REST answers a body that is not JSON, where gRPC itself would answer UNKNOWN and log a
    traceback."""

    def __init__(self, message_type: str, error: DecodeError) -> None:
        self.message_type, self.error = message_type, error

    def refusal(self) -> BadRequest:
        return BadRequest(f"a {self.message_type} message does not parse as the contract's "
                          f"(proto/msaas/v1/separation.proto): {self.error}", "invalid_message")


def add_service(servicer: object, server: grpc.aio.Server, name: str = "SeparationService") -> None:
    """The generated `add_<name>Servicer_to_server`, but a request that does not parse reaches the servicer's guard
    as `Malformed`."""
    service = pb.DESCRIPTOR.services_by_name[name]
    kinds = {(False, False): grpc.unary_unary_rpc_method_handler, (True, False): grpc.stream_unary_rpc_method_handler,
             (False, True): grpc.unary_stream_rpc_method_handler, (True, True): grpc.stream_stream_rpc_method_handler}
    handlers = {
        method.name: kinds[method.client_streaming, method.server_streaming](
            getattr(servicer, method.name),
            request_deserializer=_lenient(getattr(pb, method.input_type.name)),
            response_serializer=getattr(pb, method.output_type.name).SerializeToString,
        )
        for method in service.methods
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))


def _lenient(message_class: type) -> Callable[[bytes], object]:
    def parse(raw: bytes) -> object:
        try:
            return message_class.FromString(raw)
        except DecodeError as error:
            return Malformed(message_class.__name__, error)

    return parse


class ClientCalls:
    """The calls open from each client address, held to `limit` at once (0: no bound). Used on the loop only."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[str, int] = {}

    @contextmanager
    def holding(self, address: str) -> Iterator[None]:
        calls = self.open.get(address, 0)
        if self.limit and calls >= self.limit:
            raise TooManyCalls(f"this client has {self.limit} calls open already (GRPC_MAX_CALLS_PER_CLIENT); "
                               "call again when one has ended")
        self.open[address] = calls + 1
        try:
            yield
        finally:
            self.open[address] -= 1
            if not self.open[address]:
                del self.open[address]


class Guard:
    def __init__(self, access: Access, metrics: RpcMetrics, blocking: Blocking, redis_timeout: float,
                 calls_per_client: int) -> None:
        self.access = access
        self.metrics = metrics
        self.blocking = blocking
        self.redis_timeout = redis_timeout
        self.clients = ClientCalls(calls_per_client)

    @asynccontextmanager
    async def call(self, method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        """Admit the call, run it, and answer its failure with the code that means it."""
        code = Code.OK
        address = _peer_address(context.peer())
        try:
            with spending_redis_budget(self.redis_timeout), self.clients.holding(address):
                authorization = dict(context.invocation_metadata() or ()).get("authorization", "")
                TENANT.set(await self.blocking(self.access.admit, address, authorization))
                yield
        except ServiceError as error:  # each named error carries its code (msaas/errors.py, the one table)
            code = getattr(Code, error.grpc_code)
            if code is Code.UNAVAILABLE:
                log.warning("%s", error.message)
            retry = {"retry-after": str(error.retry_after)} if error.retry_after is not None else {}
            await _abort(context, code, error.code, error.message, retry)
        except redis.RedisError as error:
            code = Code.UNAVAILABLE
            log.warning("redis unreachable: %s", error)
            await _abort(context, code, "backend_unavailable", f"the job queue (Redis) is unreachable: {error}")
        except (asyncio.CancelledError, GeneratorExit):  # the client cancelled, or its deadline passed
            code = _gone(context)
            raise
        except Exception:
            code = Code.INTERNAL
            log.exception("unhandled error in %s", method)
            await _abort(context, code, "internal_error", "the server failed to handle this request")
        finally:
            self.metrics.requests.labels(method, code.name).inc()


def guarded(handler: Callable) -> Callable:
    """Run a servicer method inside `self.guard.call`; every method is a coroutine (a stream's writes are
    `context.write`), so a call that ends, however it ends, ends inside the guard."""
    method = handler.__name__

    @functools.wraps(handler)
    async def call(self, request, context):
        async with self.guard.call(method, context):
            if isinstance(request, Malformed):
                raise request.refusal()
            return await handler(self, request, context)

    return call


async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, error: str, message: str,
                 metadata: dict[str, str] | None = None) -> None:
    await context.abort(code, message, ((ERROR_KEY, error), *(metadata or {}).items()))


def _gone(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """Why a call ended without its answer: the client's deadline passed, or it cancelled."""
    remaining = context.time_remaining()
    return Code.DEADLINE_EXCEEDED if remaining is not None and remaining <= DEADLINE_SLACK else Code.CANCELLED


def _peer_address(peer: str) -> str:
    """`ipv4:10.0.0.7:53514` -> `10.0.0.7`, `ipv6:%5B::1%5D:53514` -> `::1`: the client's address as REST sees
    it, so a client's REST requests and gRPC calls count against one limit."""
    kind, _, rest = urllib.parse.unquote(peer).partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer
    return rest.rsplit(":", 1)[0].strip("[]")
