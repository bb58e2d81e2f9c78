"""Clients for the backing services, built from settings (never at import time)."""

from __future__ import annotations

import redis
import urllib3
from minio import Minio

from msaas.deadline import deadline_aware
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
