"""Real servers for the tests: a redis-server and an S3 server (SeaweedFS) on free ports, the REST app over
HTTP, and worker processes that run the real `demucs.separate` CLI with the tiny built-in model."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from devstack.processes import Child, free_port, redis_command, seaweedfs
from msaas.connections import connect_redis, connect_store
from msaas.settings import Settings
from msaas.storage import ObjectStore
from rest import create_app

ROOT = Path(__file__).resolve().parent.parent
SHORT_SAMPLE = ROOT / "data" / "short-hum.mp3"
S3_ACCESS_KEY, S3_SECRET_KEY = "test-access", "test-secret"  # the only keys the tests' S3 server lets in


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


def serve(app) -> tuple[str, object]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"127.0.0.1:{server.server_port}", server


@pytest.fixture
def rest(settings) -> Iterator[str]:
    """The REST app over real HTTP; yields its host:port."""
    address, server = serve(create_app(settings))
    yield address
    server.shutdown()


def child_env(settings: Settings, **overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in Settings.__dataclass_fields__}
    return {**env, **settings.to_env(), "PYTHONUNBUFFERED": "1", **overrides}


def start_service(name: str, settings: Settings, log_path: Path, **overrides: str) -> Child:
    child = Child(name, [sys.executable, "-m", name], child_env(settings, **overrides), log_path, cwd=ROOT)
    child.start()
    return child


@pytest.fixture
def worker(settings, tmp_path) -> Iterator[Child]:
    """One real worker process (tiny model); its output is in `worker.log_path`."""
    child = start_service("worker", settings, tmp_path / "worker.log")
    yield child
    child.stop()


class CallbackReceiver:
    """A local HTTP listener that records every POST it receives."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
                receiver.arrived.set()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def callback_receiver() -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver()
    yield receiver
    receiver.server.shutdown()


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def processes() -> dict[int, tuple[int, str]]:
    """Every process on this machine: pid -> (parent pid, command line), from /proc."""
    found = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rpartition(")")[2].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # it ended meanwhile
        found[int(entry)] = (parent, command)
    return found
