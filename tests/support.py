"""What the tests share besides fixtures: real servers and processes to start, waiting, and small builders."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import requests
from werkzeug.serving import make_server

from devstack.processes import Child, free_port
from msaas.jobs import Callback, Job
from msaas.naming import Result
from msaas.options import Options
from msaas.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SHORT_SAMPLE = ROOT / "data" / "short-hum.mp3"
PLANTED_RATE = 44100  # planted tracks' sample rate, as Demucs writes them
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "rest" / "gunicorn.conf.py"), "rest:create_app()"]


def job_for(songhash: str, settings: Settings, callback: Callback | None = None, **options: object) -> Job:
    """A job as REST would queue it for `songhash` with these options (the defaults if none)."""
    return Job.of(songhash, Options.resolve(options, settings.demucs_model), settings.demucs_model, 0.0, callback)


def serve(app) -> tuple[str, object]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"127.0.0.1:{server.server_port}", server


def child_env(settings: Settings, **overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in Settings.__dataclass_fields__}
    return {**env, **settings.to_env(), "PYTHONUNBUFFERED": "1", **overrides}


def start_service(name: str, settings: Settings, log_path: Path, **overrides: str) -> Child:
    child = Child(name, [sys.executable, "-m", name], child_env(settings, **overrides), log_path, cwd=ROOT)
    child.start()
    return child


def start_gunicorn(settings: Settings, log: Path, **overrides: str) -> Child:
    """REST as deployed (gunicorn with rest/gunicorn.conf.py), once its workers answer /healthz."""
    port = free_port()
    child = Child("rest", GUNICORN, child_env(settings, PORT=str(port), **overrides), log, port, ROOT)
    child.start()
    child.wait_ready()
    wait_for(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), 30, "gunicorn's workers")
    return child


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).ok
    except requests.RequestException:
        return False


class CallbackReceiver:
    """A local HTTP listener that records every POST it receives; it answers `statuses` in turn, then 200."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.statuses: list[int] = []
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
                receiver.arrived.set()
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


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


def queued(settings: Settings) -> int:
    """Jobs waiting for a worker (admitted or still on the list `toWorker`)."""
    from msaas.connections import connect_redis
    from msaas.jobqueue import JobQueue

    return JobQueue(connect_redis(settings), settings.worker_queue, settings.demucs_model).depths()["waiting"]


def stored_result(connection, store, songhash: str, tracks: dict[str, Path], tenant: str = "open",
                  options: Options | None = None, token: str = "7") -> None:
    """A done result as a worker leaves it: its tracks under its attempt's names, its status saying so, and the
    tenant's claim on it."""
    from msaas.records import owners_key, results_key, status_key

    result = Result(songhash, "") if options is None else options.result(songhash, options.model)
    extension = options.format if options is not None else "mp3"
    for track, path in tracks.items():
        store.put_output(result.attempt_key(token, track, extension), str(path), extension)
    fields = {"state": "done", "done_at": time.time(), "published": token, "job_id": "job-" + token, "seconds": 8}
    if options is not None:
        fields["options"] = json.dumps(options.as_fields())
    connection.hset(status_key(result.id), mapping=fields)
    connection.sadd(owners_key(result.id), tenant)
    connection.sadd(results_key(songhash), result.id)


class Statuses:
    """The results' status hashes, read as the tests check them."""

    def __init__(self, settings: Settings) -> None:
        from msaas.connections import connect_redis

        self.redis = connect_redis(settings)

    def get(self, result: str) -> dict[str, str]:
        return self.redis.hgetall(f"status:{result}")


def planted_audio(seconds: float = 3.0) -> dict[str, np.ndarray]:
    """Four stems of tones and noise, 16-bit, that sum without clipping."""
    time = np.arange(int(seconds * PLANTED_RATE)) / PLANTED_RATE
    noise = np.random.default_rng(3).uniform(-1, 1, len(time)) * (np.sin(2 * np.pi * 2 * time) > 0.5)
    mono = {"vocals": np.sin(2 * np.pi * 440 * time), "drums": noise, "bass": np.sin(2 * np.pi * 55 * time),
            "other": np.sin(2 * np.pi * 660 * time + 1)}
    return {name: (np.stack([signal, signal * 0.7], axis=1) * 0.2 * 32767).astype("<i2")
            for name, signal in mono.items()}


def write_track(samples: np.ndarray, path: Path, kind: str) -> Path:
    """A 16-bit track as the worker writes one: WAV, or MP3 through lameenc at quality 2."""
    import lameenc

    from worker import wav

    if kind == "wav":
        with open(path, "wb") as file:
            wav.write_header(file, len(samples), float_samples=False)
            file.write(samples.tobytes())
        return path
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(320)
    encoder.set_in_sample_rate(PLANTED_RATE)
    encoder.set_channels(2)
    encoder.set_quality(2)
    path.write_bytes(encoder.encode(samples.tobytes()) + encoder.flush())
    return path


def stored_waveforms(store, songhash: str, audio: dict[str, np.ndarray], options: Options, folder: Path,
                     token: str = "7") -> None:
    """Each planted track's waveform, computed by the worker's own code and stored beside the track as it stores
    one (`stored_result` plants the tracks)."""
    from msaas.mixes import waveform_key
    from worker.mixdown import Waveform

    result = options.result(songhash, options.model)
    for track, samples in audio.items():
        waveform = Waveform(len(samples))
        waveform.add(samples / 32768)
        path = folder / f"{track}.waveform.json"
        path.write_text(json.dumps(waveform.as_json(track), separators=(",", ":")))
        store.put_output(waveform_key(result, token, track), str(path), "json", "application/json")


class TcpProxy:
    """A TCP proxy on a free local port in front of `target_port`: each connection accepted is handed, with its own
    upstream connection, to `relay`, which subclasses write (what a fault does to the bytes). Subclasses set their
    state before calling this constructor: connections may come as soon as it returns."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", free_port()))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.relay(client, socket.create_connection(("127.0.0.1", self.target)))

    def relay(self, client: socket.socket, upstream: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.listener.close()
