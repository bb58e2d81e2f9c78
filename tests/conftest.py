"""Real servers for the tests: a redis-server and an S3 server (SeaweedFS) on free ports, the REST app over
HTTP, and worker processes that run the real `demucs.separate` CLI with the tiny built-in model."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import replace

import pytest

from devstack.processes import Child, free_port, redis_command, seaweedfs
from msaas.connections import connect_redis, connect_store
from msaas.settings import Settings
from msaas.storage import ObjectStore
from rest import create_app
from support import (  # noqa: F401 - tests written before support.py import these from conftest
    ROOT,
    SHORT_SAMPLE,
    CallbackReceiver,
    child_env,
    job_for,
    processes,
    serve,
    start_service,
    wait_for,
)

S3_ACCESS_KEY, S3_SECRET_KEY = "test-access", "test-secret"  # the only keys the tests' S3 server lets in
SERVER_FIXTURES = {"redis_server", "s3_server", "settings", "receivers", "callback_receiver"}
DEMUCS_FIXTURES = {"worker", "model_repo"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test gets a part: `demucs`, `browser` and `k8s` are marked by module or test (a test that starts a
    worker itself says so); tests using a worker fixture are `demucs`; of the rest, those using real servers or
    listeners are `stack`, the others `unit` (pure logic: the fast loop)."""
    for item in items:
        if any(item.get_closest_marker(name) for name in ("demucs", "browser", "k8s", "containers")):
            continue
        fixtures = set(item.fixturenames)
        if DEMUCS_FIXTURES & fixtures:
            item.add_marker(pytest.mark.demucs)
        else:
            item.add_marker(pytest.mark.stack if SERVER_FIXTURES & fixtures else pytest.mark.unit)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[Child]:
    folder = tmp_path_factory.mktemp("redis")
    port = free_port()
    server = Child("redis-server", redis_command(port, folder), log_path=folder / "redis.log", port=port)
    server.start()
    server.wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[Child]:
    folder = tmp_path_factory.mktemp("s3")
    server = seaweedfs("s3-server", free_port(), folder, S3_ACCESS_KEY, S3_SECRET_KEY, log_path=folder / "s3.log")
    server.start()
    server.wait_ready()
    yield server
    server.stop()


@pytest.fixture
def settings(redis_server, s3_server, tmp_path) -> Settings:
    """Settings for one test, against servers emptied for it."""
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    settings = Settings(
        redis_host="127.0.0.1",
        redis_port=redis_server.port,
        s3_endpoint=f"127.0.0.1:{s3_server.port}",
        s3_access_key=S3_ACCESS_KEY,
        s3_secret_key=S3_SECRET_KEY,
        demucs_model="demucs_unittest",
        model_cache_dir=tmp_path / "models",  # empty: no weights sneak in from the machine's own cache
        work_dir=work_dir,
        hostname="test",
        callback_timeout=2.0,
        callback_allow_hosts="127.0.0.1,localhost",  # the tests' own receivers; everything else private stays refused
        rate_limit_per_minute=0,
        retry_backoff=0.5,  # a failed job's next attempt comes in a second, not the minutes a service waits
    )
    connect_redis(settings).flushdb()
    store = ObjectStore(connect_store(settings), settings.queue_bucket, settings.output_bucket)
    store.ensure_buckets()
    for bucket in (settings.queue_bucket, settings.output_bucket):
        for item in store.client.list_objects(bucket, recursive=True):
            store.client.remove_object(bucket, item.object_name)
    return settings


@pytest.fixture
def redis_client(settings):
    return connect_redis(settings)


@pytest.fixture
def store(settings) -> ObjectStore:
    return ObjectStore(connect_store(settings), settings.queue_bucket, settings.output_bucket)


@pytest.fixture
def client(settings):
    """Flask's test client: requests go through the whole app to the real Redis and S3 servers."""
    return create_app(settings).test_client()


@pytest.fixture
def rest(settings) -> Iterator[str]:
    """The REST app over real HTTP; yields its host:port."""
    address, server = serve(create_app(settings))
    yield address
    server.shutdown()


@pytest.fixture
def rpc(settings) -> Iterator[str]:
    """The gRPC service in this process, on a free port; yields its host:port."""
    from rpc import create_server  # grpcio only for the tests that use it

    server = create_server(replace(settings, grpc_port=0), host="127.0.0.1")
    server.start()
    yield f"127.0.0.1:{server.port}"
    server.stop(grace=0)


@pytest.fixture
def worker(settings, tmp_path) -> Iterator[Child]:
    """One real worker process (tiny model); its output is in `worker.log_path`."""
    child = start_service("worker", settings, tmp_path / "worker.log")
    yield child
    child.stop()


@pytest.fixture
def callback_receiver() -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver()
    yield receiver
    receiver.server.shutdown()


@pytest.fixture
def own_redis(tmp_path) -> Iterator[Child]:
    """A redis-server of the test's own, to freeze (SIGSTOP) or fill; thawed before it stops."""
    folder = tmp_path / "own-redis"
    folder.mkdir()
    port = free_port()
    server = Child("redis-server", redis_command(port, folder), log_path=folder / "redis.log", port=port)
    server.start()
    server.wait_ready()
    yield server
    server.signal(signal.SIGCONT)
    server.stop()
