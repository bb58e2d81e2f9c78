"""Hostile and slow clients against REST as deployed (gunicorn, rest/gunicorn.conf.py) or over real HTTP:
fields held whole, slow clients starving the probes, unbounded metric labels, free key guessing, gunicorn's
own HTML errors, services listening everywhere, and scratch files left behind by killed processes."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import socket
import string
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from devstack.processes import Child, free_port
from msaas.connections import connect_redis
from msaas.jobqueue import JobQueue
from msaas.naming import songhash_of
from rest import create_app
from support import ROOT, SHORT_SAMPLE, job_for, serve, start_gunicorn, start_service, wait_for

SONG = SHORT_SAMPLE.read_bytes()
SONG_BASE64 = base64.b64encode(SONG).decode()
BIG = 100 * 1024  # over the fields' 64 KiB


@pytest.fixture
def gunicorn(settings, tmp_path) -> Iterator[Child]:
    """REST under gunicorn; a body must come at 1000 bytes/s after 2 s of slack."""
    child = start_gunicorn(settings, tmp_path / "rest.log", BODY_GRACE_SECONDS="2", BODY_MIN_RATE="1000")
    yield child
    child.stop()


def refused(answer: requests.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"].startswith("application/json"), answer.text
    error = json.loads(answer.text)
    assert error["error"] == code and error["message"], answer.text


def nothing_queued(settings) -> bool:
    return JobQueue(connect_redis(settings), settings.worker_queue, settings.demucs_model).depths()["waiting"] == 0


# Fields: every one but `mp3` small, checked as the body streams.


@pytest.mark.parametrize(
    "body",
    [
        '{"x": [' + ",".join(["0"] * 300_000) + "]}",  # the attack: one unknown field of 600 KB
        json.dumps({"mp3": SONG_BASE64, "callback": {"url": "http://127.0.0.1:9/hook", "data": "a" * BIG}}),
        json.dumps({"callback": {"url": "http://127.0.0.1:9/hook", "data": {"d": "a" * BIG}}, "mp3": SONG_BASE64}),
        '{"mp3": [' + ",".join(["0"] * 300_000) + "]}",
        json.dumps({"k" * BIG: 1, "mp3": SONG_BASE64}),
        json.dumps({"model": "m" * BIG, "mp3": SONG_BASE64}),
        json.dumps({**{f"f{n}": "v" * 2000 for n in range(40)}, "mp3": SONG_BASE64}),  # 80 KB in all
    ],
    ids=["array", "callback-data", "callback-data-first", "mp3-array", "key", "model", "many-fields"],
)
def test_json_fields_but_the_song_are_capped(settings, rest, body):
    answer = requests.post(f"http://{rest}/apiv1/separate", data=body, headers={"Content-Type": "application/json"})
    refused(answer, 413, "field_too_large")
    assert nothing_queued(settings)


def test_a_huge_field_is_refused_before_the_body_has_arrived(rest):
    """A 30 MB field gets its 413 while most of the body is still unsent: it was never held whole."""
    host, port = rest.split(":")
    length = 30 * 1024 * 1024
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(
            f"POST /apiv1/separate HTTP/1.1\r\nHost: {rest}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n".encode() + b'{"x": [' + b"0," * 512 * 1024
        )  # 1 MB of 30
        head, body = read_answer(connection)
    assert head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(body)["error"] == "field_too_large"


def read_answer(connection: socket.socket) -> tuple[bytes, bytes]:
    """An HTTP answer's head and its body (Content-Length bytes, or up to the close)."""
    answer = b""
    while b"\r\n\r\n" not in answer and (chunk := connection.recv(65536)):
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lengths = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    while (not lengths or len(body) < lengths[0]) and (chunk := connection.recv(65536)):
        body += chunk
    return head, body


def test_multipart_fields_and_query_strings_are_capped(settings, rest, client):
    url = f"http://{rest}/apiv1/separate"
    files = {"mp3": ("song.mp3", SONG, "audio/mpeg")}
    refused(requests.post(url, files=files, data={"x": "a" * BIG}), 413, "field_too_large")
    refused(requests.post(url, files=files, data={f"f{n}": "a" * 2000 for n in range(40)}), 413, "field_too_large")
    refused(requests.post(url, files=files, data={f"f{n}": "1" for n in range(100)}), 413, "field_too_large")
    # A query string that long is over the request line limit of any HTTP server but Flask's test client.
    raw = {"data": SONG, "content_type": "audio/mpeg"}
    refused(client.post("/apiv1/separate", query_string={"x": "a" * BIG}, **raw), 413, "field_too_large")
    refused(client.get("/apiv1/status/" + "0" * 56, query_string={"model": "a" * BIG}), 413, "field_too_large")
    assert nothing_queued(settings)
    # The same song with small fields still goes through.
    assert requests.post(url, files=files, data={"model": "demucs_unittest"}).status_code == 200


@pytest.mark.parametrize("unnamed", [b'name="x\\"', b'filename="a.mp3"; name="x\\"'], ids=["field", "file"])
def test_a_multipart_part_without_a_readable_name_is_refused(settings, rest, unnamed):
    """A Content-Disposition whose quoted name never ends (`name="x\\"`): werkzeug keeps the part, a field or a
    file, under no name; REST answers 400 (it answered 500 for the field, schemathesis found it, and dropped the
    file unread)."""
    parts = [b"Content-Disposition: form-data; " + unnamed + b"\r\n\r\nnull",
             b'Content-Disposition: form-data; name="mp3"; filename="song.mp3"\r\n\r\n' + SONG]
    body = b"".join(b"--b\r\n" + part + b"\r\n" for part in parts) + b"--b--\r\n"
    answer = requests.post(f"http://{rest}/apiv1/separate", data=body,
                           headers={"Content-Type": "multipart/form-data; boundary=b"})
    refused(answer, 400, "invalid_body")
    assert nothing_queued(settings)


# Slow clients: the probes keep answering; bodies and headers too slow are cut off.


class Drippers:
    """`count` connections, each sending its request a byte at a time every `interval` seconds, reconnecting
    whenever the server closes one (as an attacker would)."""

    def __init__(self, port: int, requests_: list[bytes], interval: float = 0.5) -> None:
        self.port, self.requests, self.interval = port, requests_, interval
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._drip, args=(request,), daemon=True) for request in requests_]

    def __enter__(self) -> Drippers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(10)

    def _drip(self, request: bytes) -> None:
        while not self.stopping.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as connection:
                    for byte in request:
                        if self.stopping.wait(self.interval):
                            return
                        connection.sendall(bytes([byte]))
            except OSError:
                pass  # closed by the server: open another


def test_slow_clients_do_not_starve_the_probes(settings, tmp_path):
    """40 connections dripping headers or bodies (more than the old 2 x 8 threads); /healthz still answers."""
    child = start_gunicorn(settings, tmp_path / "rest.log", BODY_GRACE_SECONDS="600")  # bodies held all along
    try:
        headers = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * 200 + b"\r\n\r\n"
        body = b"POST /apiv1/separate HTTP/1.1\r\nHost: x\r\nContent-Type: audio/mpeg\r\nContent-Length: 1000\r\n\r\n"
        drippers = [headers] * 20 + [body + b"\0" * 1000] * 20
        with Drippers(child.port, drippers):
            time.sleep(3)  # every dripper connected and sending
            for _ in range(10):
                answer = requests.get(f"http://127.0.0.1:{child.port}/healthz", timeout=5)
                assert answer.status_code == 200
                time.sleep(0.5)
    finally:
        child.stop()


def test_bodies_and_headers_too_slow_are_cut_off(gunicorn):
    with socket.create_connection(("127.0.0.1", gunicorn.port), timeout=30) as connection:
        connection.sendall(
            b"POST /apiv1/separate HTTP/1.1\r\nHost: x\r\nContent-Type: audio/mpeg\r\nContent-Length: 2000\r\n\r\n"
        )
        head = _drip_until_answered(connection, b"\0" * 2000)  # 20 bytes a second, against 1000
    assert head.startswith(b"HTTP/1.1 408"), head[:200]
    assert b'"request_timeout"' in head

    with socket.create_connection(("127.0.0.1", gunicorn.port), timeout=30) as connection:
        closed = _drip_until_answered(connection, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 200)
    assert closed == b""  # headers not complete within gunicorn's keepalive: the connection is closed


def _drip_until_answered(connection: socket.socket, data: bytes) -> bytes:
    """Send `data` 10 bytes every 0.5 s until the server answers (its answer) or closes (b"")."""
    connection.settimeout(0.5)
    for start in range(0, len(data), 10):
        try:
            connection.sendall(data[start : start + 10])
            if not connection.recv(1, socket.MSG_PEEK):
                return b""
        except TimeoutError:
            continue
        except ConnectionError:
            return b""
        connection.settimeout(10)
        head, body = read_answer(connection)
        return head + b"\r\n\r\n" + body
    raise AssertionError("the server waited for the whole slow request")


# gunicorn's own refusals, metrics labels, bind address.


def test_malformed_requests_are_refused_in_json(gunicorn):
    port = gunicorn.port
    for request, status in [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /" + b"a" * 6000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
        (b"POST /apiv1/separate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
         400),  # gunicorn decodes the chunks as the app reads them
    ]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(request)
            head, body = read_answer(connection)
        assert head.startswith(f"HTTP/1.1 {status}".encode()), head
        assert b"Content-Type: application/json" in head, head
        error = json.loads(body)
        assert set(error) == {"error", "message"} and error["message"], error


def test_metric_labels_come_from_closed_sets(gunicorn):
    url = f"http://127.0.0.1:{gunicorn.port}"
    for _ in range(30):
        method = "".join(random.choices(string.ascii_uppercase, k=16))
        requests.request(method, f"{url}/apiv1/queue", timeout=10)
        requests.request(method, f"{url}/no/such/{method}", timeout=10)
    text = requests.get(f"{url}/metrics", timeout=10).text
    methods = {
        sample.labels["method"]
        for family in text_string_to_metric_families(text)
        if family.name == "msaas_http_requests"
        for sample in family.samples
    }
    assert methods <= {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"}
    assert "other" in methods


def _listening(port: int) -> set[str]:
    """The IPv4 addresses something listens on at `port`, from /proc/net/tcp (state 0A: LISTEN)."""
    addresses = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            addresses.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return addresses


def test_bind_host_names_where_rest_and_worker_listen(settings, tmp_path):
    from devstack.__main__ import LOCAL_DEFAULTS

    assert LOCAL_DEFAULTS["BIND_HOST"] == "127.0.0.1"  # make run
    rest = start_gunicorn(settings, tmp_path / "rest.log", BIND_HOST="127.0.0.1")
    metrics_port = free_port()
    worker = start_service(
        "worker", settings, tmp_path / "worker.log", BIND_HOST="127.0.0.1", WORKER_METRICS_PORT=str(metrics_port)
    )
    try:
        wait_for(lambda: _listening(metrics_port), 60, "the worker's metrics server")
        assert _listening(rest.port) == {"127.0.0.1"}
        assert _listening(metrics_port) == {"127.0.0.1"}
    finally:
        worker.stop()
        rest.stop()


# Refused keys count towards the rate limit.


def test_refused_keys_count_towards_the_rate_limit(settings):
    app = create_app(replace(settings, api_keys="the-right-key", rate_limit_per_minute=5))
    address, server = serve(app)
    try:
        url = f"http://{address}/apiv1/queue"
        answers = [requests.get(url, headers={"Authorization": f"Bearer guess-{n}"}) for n in range(6)]
        assert [answer.status_code for answer in answers] == [401] * 5 + [429]
        refused(answers[-1], 429, "too_many_requests")
        # Guessing on is pointless: the address is held before any key is looked at, a right one included.
        refused(requests.get(url, headers={"Authorization": "Bearer the-right-key"}), 429, "too_many_requests")
    finally:
        server.shutdown()


# Scratch space: what a killed process leaves is swept by the next one.


def _files(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()}


def test_a_killed_rest_leaves_no_spool_file_behind(settings, tmp_path):
    work_dir = settings.work_dir
    child = start_gunicorn(settings, tmp_path / "rest.log", BODY_GRACE_SECONDS="600")
    with socket.create_connection(("127.0.0.1", child.port), timeout=10) as connection:
        connection.sendall(
            b"POST /apiv1/separate HTTP/1.1\r\nHost: x\r\nContent-Type: audio/mpeg\r\nContent-Length: 1000000\r\n\r\n"
            + SONG[:50_000]
        )
        wait_for(lambda: any(path.suffix == ".mp3" for path in _files(work_dir)), 30, "the upload's spool file")
        child.signal(signal.SIGKILL)
        child.process.wait()
    left = _files(work_dir)
    restarted = start_gunicorn(settings, tmp_path / "rest-2.log")
    try:
        assert not left & _files(work_dir)
    finally:
        restarted.stop()


def test_a_killed_worker_leaves_no_scratch_behind(settings, store, tmp_path):
    """A worker killed mid-separation; the next worker to start removes the song's scratch folder."""
    store.put_input(songhash_of(SONG), str(SHORT_SAMPLE))
    queue = JobQueue(connect_redis(settings), settings.worker_queue, settings.demucs_model)
    queue.push(job_for(songhash_of(SONG), settings))
    worker = start_service("worker", settings, tmp_path / "worker.log", WORKER_METRICS_PORT="0")
    song_scratch = wait_for(
        lambda: [path for path in settings.work_dir.rglob(f"{songhash_of(SONG)}-*") if path.is_dir()], 60,
        "the worker's scratch folder",
    )
    worker.signal(signal.SIGKILL)
    worker.process.wait()
    assert song_scratch[0].exists()
    restarted = start_service("worker", settings, tmp_path / "worker-2.log", WORKER_METRICS_PORT="0")
    try:
        wait_for(lambda: not song_scratch[0].exists(), 60, "the dead worker's scratch folder to be swept")
    finally:
        restarted.stop()


CLAIMER = """
import sys, time
from msaas.scratch import claim
folder = claim(sys.argv[1], "test")
(folder / "spool.mp3").write_bytes(b"x")
print(folder, flush=True)
time.sleep(600)
"""


def test_scratch_of_dead_processes_is_swept_and_of_live_ones_kept(tmp_path):
    from msaas.scratch import claim

    def owner() -> tuple[subprocess.Popen, Path]:
        process = subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        return process, Path(process.stdout.readline().strip())

    dead, dead_folder = owner()
    alive, alive_folder = owner()
    try:
        dead.kill()
        dead.wait()
        assert (dead_folder / "spool.mp3").exists()
        mine = claim(tmp_path, "test")
        assert not dead_folder.exists()
        assert (alive_folder / "spool.mp3").exists()
        assert mine.exists() and mine not in (dead_folder, alive_folder)
        assert claim(tmp_path, "test") == mine  # one folder per process
    finally:
        alive.kill()
        alive.wait()
