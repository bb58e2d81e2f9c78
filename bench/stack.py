"""The whole service on this machine for one benchmark: redis-server, the S3 server (SeaweedFS), REST under gunicorn
and any number of workers, on free ports, logging into the stack's folder; and a receiver for the workers'
callbacks, so a timed run ends when the tracks are stored without polling that would take CPU from it."""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from bench.config import Model, child_env
from bench.measure import MiB, PeakRss
from devstack.processes import Child, free_port, redis_command, seaweedfs
from msaas.models import stems_of
from msaas.naming import songhash_of
from msaas.settings import Settings
from msaas.status import FAILED

ROOT = Path(__file__).resolve().parent.parent
STATUS_EVERY = 5.0  # seconds between status checks while waiting for a callback: only to notice a failure
START_TIMEOUT = 60.0
REST_COMMAND = [sys.executable, "-m", "gunicorn", "-c", "rest/gunicorn.conf.py", "rest:create_app()"]  # as deployed
WORKER_COMMAND = [sys.executable, "-m", "worker"]


class Callbacks:
    """Receives callbacks at `url_for(songhash)` and notes when each arrived (time.perf_counter)."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver._arrived(self.path.strip("/"))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass  # one line per song on the benchmark's output is noise

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="callbacks", daemon=True)

    def __enter__(self) -> Callbacks:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url_for(self, songhash: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/{songhash}"

    def wait(self, songhash: str, timeout: float) -> float | None:
        with self._changed:
            self._changed.wait_for(lambda: songhash in self.arrivals, timeout)
            return self.arrivals.get(songhash)

    def forget(self, songhash: str) -> None:
        with self._changed:
            self.arrivals.pop(songhash, None)

    def _arrived(self, songhash: str) -> None:
        with self._changed:
            self.arrivals.setdefault(songhash, time.perf_counter())  # a repeated delivery changes nothing
            self._changed.notify_all()


@dataclass(frozen=True)
class Upload:
    """One POST /apiv1/separate, its body built before any clock starts."""

    songhash: str
    data: bytes
    headers: dict[str, str]
    params: dict[str, str]


def upload(mp3: bytes, raw: bool = False, callbacks: Callbacks | None = None) -> Upload:
    """The song as base64 in JSON (the reference clients' way) or as the raw body."""
    songhash = songhash_of(mp3)
    callback_url = callbacks.url_for(songhash) if callbacks else None
    if raw:
        params = {"callback_url": callback_url} if callback_url else {}
        return Upload(songhash, mp3, {"Content-Type": "audio/mpeg"}, params)
    body: dict = {"mp3": base64.b64encode(mp3).decode()}
    if callback_url:
        body["callback"] = {"url": callback_url}
    return Upload(songhash, json.dumps(body).encode(), {"Content-Type": "application/json"}, {})


@dataclass(frozen=True)
class StackRun:
    seconds: float  # POST to the last track downloadable
    worker_peak_rss: int  # bytes, the worker and its Demucs subprocess


class Stack:
    """`with Stack(folder, model, workers=2) as stack:` starts everything, and stops it all on the way out."""

    def __init__(
        self, folder: Path, model: Model, workers: int = 1, worker_env: Mapping[str, str] | None = None,
        rest_env: Mapping[str, str] | None = None,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.settings = _settings(folder, model)
        self.tracks = stems_of(model.name)
        env = child_env(**self.settings.to_env())
        redis_port, s3_port = self.settings.redis_port, int(self.settings.s3_endpoint.rsplit(":", 1)[1])
        self.redis = Child("redis", redis_command(redis_port, folder), env, folder / "redis.log", redis_port)
        keys = self.settings.s3_access_key, self.settings.s3_secret_key
        self.s3 = seaweedfs("s3", s3_port, folder / "s3", *keys, env, folder / "s3.log")
        rest_env = {**env, **(rest_env or {})}
        self.rest = Child("rest", REST_COMMAND, rest_env, folder / "rest.log", self.settings.port, ROOT)
        self.workers = [self._worker(index, {**env, **(worker_env or {})}) for index in range(workers)]

    def __enter__(self) -> Stack:
        try:
            for child in (self.redis, self.s3, self.rest):
                self._start(child)
            self._wait_rest_ready()
            for child in self.workers:
                self._start(child)  # ready once its metrics port is open: connected and taking jobs
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        for child in reversed([self.redis, self.s3, self.rest, *self.workers]):
            child.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    @property
    def rest_pid(self) -> int:
        """gunicorn's master; its worker processes are its children."""
        return self.rest.process.pid

    def worker_pid(self, index: int = 0) -> int:
        return self.workers[index].process.pid

    def restart_rest(self) -> None:
        """A fresh REST service, so a memory measurement starts from a clean heap."""
        self.rest.stop()
        self._start(self.rest)
        self._wait_rest_ready()

    def post(self, request: Upload, session: requests.Session | None = None) -> requests.Response:
        return (session or requests).post(
            f"{self.url}/apiv1/separate",
            data=request.data,
            headers=request.headers,
            params=request.params,
            timeout=300,
        )

    def submit(self, request: Upload) -> str:
        """POST the song; the service's `reason`."""
        answer = self.post(request)
        answer.raise_for_status()
        return answer.json()["reason"]

    def separate(self, callbacks: Callbacks, mp3: bytes, timeout: float = 4 * 3600) -> StackRun:
        """A fresh separation of `mp3` (earlier results removed) by worker 0, as a client sees it."""
        request = upload(mp3, callbacks=callbacks)
        self.remove(request.songhash)
        callbacks.forget(request.songhash)
        with PeakRss(self.worker_pid(0)) as memory:
            started = time.perf_counter()
            self.submit(request)
            self.wait_done(callbacks, request.songhash, timeout)
            if not self.tracks_downloadable(request.songhash):
                raise RuntimeError(f"song {request.songhash} called back, but not all its tracks download")
            seconds = time.perf_counter() - started
        return StackRun(seconds, memory.peak)

    def wait_done(self, callbacks: Callbacks, songhash: str, timeout: float) -> float:
        """When the song's callback arrived; raises if the song failed, a worker died or time ran out."""
        deadline = time.monotonic() + timeout
        while (arrived := callbacks.wait(songhash, STATUS_EVERY)) is None:
            status = self.status(songhash)
            if status.get("state") == FAILED:
                raise RuntimeError(f"song {songhash} failed: {status.get('reason')} (see {self.folder})")
            for worker in self.workers:
                if worker.exit_code() is not None:
                    raise RuntimeError(f"{worker.name} exited with {worker.exit_code()} (see {worker.log_path})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"song {songhash} not done within {timeout:.0f} s (see {self.folder})")
        return arrived

    def tracks_downloadable(self, songhash: str) -> bool:
        for track in self.tracks:
            # Streamed and closed unread: whether it downloads, not how fast this client reads it.
            with requests.get(f"{self.url}/apiv1/track/{songhash}/{track}", stream=True, timeout=30) as answer:
                if not answer.ok:
                    return False
        return True

    def status(self, songhash: str) -> dict:
        answer = requests.get(f"{self.url}/apiv1/status/{songhash}", timeout=30)
        return answer.json() if answer.ok else {}

    def remove(self, songhash: str) -> None:
        """Forget the song entirely: input, tracks, status (a 404 when there is nothing is fine)."""
        requests.delete(f"{self.url}/apiv1/remove/{songhash}", timeout=30)

    def queued(self) -> list[str]:
        answer = requests.get(f"{self.url}/apiv1/queue", timeout=30)
        answer.raise_for_status()
        return answer.json()["queue"]

    def worker_metric(self, name: str, index: int = 0) -> float:
        """A sample of worker `index`'s /metrics (0 when it has none yet)."""
        port = self.workers[index].port
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    return sample.value
        return 0.0

    def _worker(self, index: int, env: dict[str, str]) -> Child:
        """Worker `index`, serving its metrics on a port of its own (also how to tell it is up)."""
        port = free_port()
        log = self.folder / f"worker-{index}.log"
        return Child(f"worker-{index}", WORKER_COMMAND, {**env, "WORKER_METRICS_PORT": str(port)}, log, port, ROOT)

    def _start(self, child: Child) -> None:
        child.start()
        child.wait_ready(START_TIMEOUT)

    def _wait_rest_ready(self) -> None:
        """Open port is not enough: ready means Redis and the store answer and the buckets exist."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if requests.get(f"{self.url}/readyz", timeout=5).ok:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"rest not ready within {START_TIMEOUT:.0f} s (see {self.rest.log_path})")
            time.sleep(0.2)


def _settings(folder: Path, model: Model) -> Settings:
    """Every service's settings: free ports, this folder for scratch, the benchmark's model."""
    return Settings(
        redis_host="127.0.0.1",
        redis_port=free_port(),
        s3_endpoint=f"127.0.0.1:{free_port()}",
        s3_access_key="bench",
        s3_secret_key="bench-secret",
        port=free_port(),
        hostname="bench",
        demucs_model=model.name,
        demucs_repo=model.repo,
        work_dir=folder,
        max_request_bytes=64 * MiB,  # B2's 10 MB MP3 is 13.4 MB in base64
        callback_allow_hosts="127.0.0.1",  # the callback receiver
        shutdown_grace=1.0,  # a stack stopped after a failure should not wait for a separation to end
    )
