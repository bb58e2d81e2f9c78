"""Every setting of every service, read once from the environment at start-up.

The defaults match `make run`. docs/operations.md's "Settings" tables list the same names with their defaults;
tests/test_docs.py keeps them, and tests/test_manifests.py the Kubernetes manifests, in step with `FIELDS` below.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from msaas.errors import ConfigError


@dataclass(frozen=True)
class Settings:
    redis_host: str = "localhost"
    redis_port: int = 6379
    redis_db: int = 0
    redis_password: str | None = None
    s3_endpoint: str = "localhost:9000"  # host:port, as the minio client takes it
    s3_secure: bool = False
    s3_access_key: str = ""  # required: no default credentials
    s3_secret_key: str = ""
    s3_region: str = "us-east-1"
    queue_bucket: str = "queue"
    output_bucket: str = "output"
    worker_queue: str = "toWorker"
    log_list: str = "logging"
    log_level: str = "INFO"
    port: int = 5000  # where the REST service listens
    grpc_port: int = 50051  # where the gRPC service listens
    grpc_metrics_port: int = 8001  # where the gRPC service serves /metrics; 0: no metrics server
    # the address REST, the gRPC service and the metrics servers listen on (all, for containers)
    bind_host: str = "0.0.0.0"
    max_request_bytes: int = 64 * 1024 * 1024
    body_grace_seconds: float = 10.0  # a request body may lag behind BODY_MIN_RATE by this much...
    body_min_rate: int = 16 * 1024  # ...bytes per second, on average, before REST answers 408 (gRPC: DEADLINE_EXCEEDED)
    # seconds all the Redis commands of one API request may wait, together; then REST answers 503, gRPC UNAVAILABLE
    redis_timeout: float = 3.0
    grpc_max_watches: int = 1000  # WatchStatus calls one gRPC process holds open; more are RESOURCE_EXHAUSTED
    grpc_max_calls_per_client: int = 256  # gRPC calls open at once from one client address; 0: no bound
    # idle connections (no request in flight) one REST process holds from one client address (IPv6: one /64)...
    max_idle_connections_per_client: int = 100
    max_idle_connections: int = 1000  # ...and in all; beyond either, it closes the oldest idle one
    demucs_model: str = "htdemucs"
    demucs_device: str = "cpu"
    demucs_segment: int | None = None
    # CPUs one separation uses in all (Demucs runs one segment per CPU, one thread each); 0: OMP_NUM_THREADS if
    # set, else the CPUs the worker may use
    demucs_threads: int = 0
    # segments Demucs separates at once, each with DEMUCS_THREADS / DEMUCS_JOBS threads; 0: one per CPU, fewer
    # when the memory budget is short
    demucs_jobs: int = 0
    # MiB one separation may use, the worker included; 0: 80% of the container's memory limit (else the machine's)
    memory_budget_mib: int = 0
    demucs_malloc: str = "tcmalloc"  # the allocator Demucs runs with: tcmalloc (15% faster), or system
    chunk_seconds: float = 0.0  # at most this long a chunk; 0: as long as the memory budget allows
    chunk_overlap_seconds: float = 5.0  # neighbouring chunks share at least this much, and are crossfaded there
    # a song's first this many seconds are separated first and served while the rest is (0: the whole at once)
    first_part_seconds: float = 10.0
    demucs_repo: Path | None = None
    model_cache_dir: Path | None = None  # where Demucs keeps downloaded weights (a volume in a cluster)
    # RoFormer checkpoints an offline cluster provides (audio-separator's layout); others are downloaded into
    # MODEL_CACHE_DIR/roformer
    model_dir: Path | None = None
    worker_engines: str = ""  # the engines a worker serves (demucs, roformer; comma-separated); empty: all
    store_timeout: float = 300.0  # seconds one object-store upload or download may take, wall clock
    work_dir: Path | None = None  # scratch space for the worker; the system's temp folder if unset
    demucs_timeout_min: float = 120.0  # a separation may take this long plus...
    # ...this many seconds per second of audio (times the model's cost against htdemucs); then it is killed...
    demucs_timeout_factor: float = 10.0
    # ...and after this many seconds whatever the song; a song the workers serving its model expect to take longer
    # is refused at the door. 0: no bound
    demucs_timeout_max: float = 10800.0
    max_attempts: int = 3  # attempts at a job before it is dead-lettered
    retry_backoff: float = 10.0  # seconds before a failed job's second attempt; doubled for each later one...
    retry_backoff_cap: float = 600.0  # ...up to this (each wait less up to a quarter of it, at random)
    lease_seconds: float = 30.0  # a worker silent this long is presumed dead and its jobs are requeued
    shutdown_grace: float = 25.0  # on SIGTERM, finish the current job if it ends within this, else hand it back
    callback_timeout: float = 10.0  # seconds one callback attempt may take, wall clock, however the receiver answers
    callback_threads: int = 4  # threads per worker delivering callbacks, apart from separation
    callback_attempts: int = 4  # attempts to deliver a callback...
    callback_backoff: float = 1.0  # ...waiting this, then twice as long, and so on, between them
    callback_secret: str = ""  # signs callbacks (HMAC-SHA256); unsigned when empty
    callback_allow_hosts: str = ""  # comma-separated hosts exempt from the private-address guard
    api_keys: str = ""  # comma-separated bearer tokens, each a tenant of its own; empty (and no TENANTS_FILE): open
    tenants_file: Path | None = None  # tenants, their keys, weights and limits (JSON; re-read when it changes)
    admin_keys: str = ""  # comma-separated keys for the admin routes (dead letters, every tenant's usage)
    rate_limit_per_minute: int = 1200  # API requests per client per minute; 0: unlimited
    max_song_seconds: float = 3600.0  # longest song accepted
    retention_days: int = 0  # inputs and outputs expire after this many days; 0: kept
    s3_public_endpoint: str = ""  # host:port clients reach the store at, for presigned download links
    public_url: str = ""  # the API's address as clients reach it (https://msaas.example.org), for track links
    hostname: str = ""  # names this process in log lines; the machine's hostname if unset
    logs_min_level: str = "DEBUG"  # the logs service prints lines of this level and above
    worker_metrics_port: int = 8000  # where a worker serves /metrics; 0: no metrics server
    # prometheus-client's own variable: set, REST sums the metrics of gunicorn's worker processes from there
    prometheus_multiproc_dir: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Build settings from `environ`; a malformed value raises ConfigError naming the variable."""
        values = {}
        for field in fields(cls):
            name = field.name.upper()
            raw = environ.get(name)
            if raw is None or raw == "":
                continue
            values[field.name] = _parse(name, raw, field.type)
        settings = cls(**values)
        if not settings.hostname:
            settings = replace(settings, hostname=socket.gethostname())
        return settings

    def to_env(self) -> dict[str, str]:
        """The environment that `from_env` reads back as these settings (for child processes)."""
        env = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None:
                env[field.name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
        return env

    def require_store_credentials(self) -> Settings:
        """Services that use the object store call this at start-up: there are no default credentials."""
        for name in ("s3_access_key", "s3_secret_key"):
            if not getattr(self, name):
                raise ConfigError(f"{name.upper()} must be set (the object store's credentials)")
        return self


FIELDS = tuple(field.name.upper() for field in fields(Settings))


def _parse(name: str, raw: str, kind: str) -> object:
    """Convert `raw` to the field's declared type (annotations are strings under `from __future__`)."""
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        if kind.startswith("bool"):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind.startswith("Path"):
            return Path(raw)
        return raw
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind.split(' ')[0]}") from None
