"""Clients for the backing services, built from settings (never at import time)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
import urllib3
from minio import Minio
from redis.backoff import NoBackoff
from redis.retry import Retry

from msaas.deadline import deadline_aware, redis_budget
from msaas.settings import Settings


def connect_redis(settings: Settings, socket_timeout: float = 10.0) -> redis.Redis:
    """A Redis client that fails fast when the server is away; `socket_timeout` must exceed any BLMOVE wait."""
    return redis.Redis(
        host=settings.redis_host,
        port=settings.redis_port,
        db=settings.redis_db,
        password=settings.redis_password,
        socket_connect_timeout=2.0,
        socket_timeout=socket_timeout,
        health_check_interval=30,
        decode_responses=True,
    )


class BudgetedConnection(redis.Connection):
    """A Redis connection whose every wait (connecting, sending, reading) is cut to what is left of the Redis
    budget of the request in force (msaas.deadline.RedisBudget), and charged to it; none left: TimeoutError at once.
    Outside a request it waits its socket timeouts, as any connection does."""

    _waits = 0  # budgeted waits under way on this connection (connecting nests in sending the first command)

    def _connect(self):
        with self._budgeted() as left:
            if left is None:
                return super()._connect()
            configured = self.socket_connect_timeout
            self.socket_connect_timeout = left if configured is None else min(configured, left)
            try:
                sock = super()._connect()
            finally:
                self.socket_connect_timeout = configured
            sock.settimeout(self._timeout(left))  # the handshake's reads come next, before any command's
            return sock

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        with self._budgeted():
            super().send_packed_command(command, check_health)

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        with self._budgeted():
            return super().read_response(*args, **kwargs)

    @contextmanager
    def _budgeted(self) -> Iterator[float | None]:
        """Within the block, this connection waits at most what the request has left (yielded; None: no budget)."""
        budget = redis_budget()
        if budget is None:
            yield None
            return
        left = budget.remaining()
        if left <= 0:
            self.disconnect()  # a command sent but not read would be taken for the next one's answer
            raise redis.TimeoutError(budget.spent_message())
        budget.begin()
        self._waits += 1
        if self._sock is not None:
            self._sock.settimeout(self._timeout(left))
        try:
            yield left
        except (redis.TimeoutError, TimeoutError):
            if budget.remaining() <= 0:  # say why the wait was cut short, not only that it was
                raise redis.TimeoutError(budget.spent_message()) from None
            raise
        finally:
            budget.end()
            self._waits -= 1
            if self._sock is not None:  # the outer wait's bound again; after the last, as configured
                self._sock.settimeout(self._timeout(budget.remaining()) if self._waits else self.socket_timeout)

    def _timeout(self, left: float) -> float:
        left = max(left, 0.001)  # 0 would make the socket non-blocking, not quick to give up
        return left if self.socket_timeout is None else min(self.socket_timeout, left)


def connect_api_redis(settings: Settings) -> redis.Redis:
    """The APIs' client (REST, gRPC): every command waits at most REDIS_TIMEOUT, and all the commands of one
    request together too (its RedisBudget), and none is retried: with Redis frozen, a request answers 503
    within that time instead of waiting out a socket timeout several times over."""
    pool = redis.ConnectionPool(
        connection_class=BudgetedConnection,
        host=settings.redis_host,
        port=settings.redis_port,
        db=settings.redis_db,
        password=settings.redis_password,
        socket_connect_timeout=min(2.0, settings.redis_timeout),
        socket_timeout=settings.redis_timeout,
        health_check_interval=30,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )
    return redis.Redis(connection_pool=pool)


def store_http() -> urllib3.PoolManager:
    """Connections to the object store that give up within seconds when it is down, instead of minio's long
    retry loop. Its sockets are cut by the deadline of the request in force (`ObjectStore._reaching`)."""
    return deadline_aware(urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=3.0, read=60.0),
        retries=urllib3.Retry(total=2, connect=1, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
        maxsize=16,
        blocksize=256 * 1024,  # uploads stream from disk in pieces this big (urllib3's default: 16 KiB)
    ))


def connect_store(settings: Settings) -> Minio:
    return Minio(
        settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=settings.s3_secure,
        region=settings.s3_region,
        http_client=store_http(),
    )
