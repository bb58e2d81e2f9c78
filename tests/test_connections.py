"""What REST under gunicorn (rest/gunicorn.conf.py, rest/gunicorn_worker.py) holds for its clients' connections:
probes answered within their timeout while floods of idle connections come and go, a cap on what one address
holds, and the HTTP framing gunicorn lets through that RFC 9112 does not."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator

import pytest
import requests
import yaml

from devstack.floods import IdleFlood, held_by_server
from devstack.processes import Child, free_port
from msaas.errors import ConfigError
from rest.idle_connections import IdleConnections, client_of
from support import GUNICORN, ROOT, child_env, start_gunicorn, stored_result, wait_for

FLOOD = 1100  # issue 20: what pushed /healthz from 9 ms to 2.1 s (p50)
FLOOD_SECONDS = 12  # past the kernel's wait for a silent connection's first bytes (keepalive, 5 s, rounded up to
# 7 s of SYN-ACK retransmissions): the flood's connections have reached gunicorn and been closed by the caps
PER_CLIENT, IN_ALL = 40, 150  # small caps, so a few hundred connections are beyond them
FLOOD_SOURCES = tuple(f"127.0.0.{host}" for host in range(2, 8))
SONGHASH = "ab" * 28
TRACK_BYTES = 8 << 20  # more than the kernel buffers between REST and a client that reads nothing
STALLED_SOURCE = "127.0.0.9"


def probe_timeouts() -> dict[str, float]:
    """timeoutSeconds of REST's probes, by path, from its manifest."""
    deployment = yaml.safe_load((ROOT / "rest" / "k8s" / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {container[probe]["httpGet"]["path"]: float(container[probe]["timeoutSeconds"])
            for probe in ("livenessProbe", "readinessProbe")}


@pytest.fixture
def gunicorn(settings, tmp_path) -> Iterator[Child]:
    child = start_gunicorn(settings, tmp_path / "rest.log")
    yield child
    child.stop()


@pytest.fixture
def capped(settings, tmp_path) -> Iterator[Child]:
    child = start_gunicorn(settings, tmp_path / "rest.log", MAX_IDLE_CONNECTIONS_PER_CLIENT=str(PER_CLIENT),
                           MAX_IDLE_CONNECTIONS=str(IN_ALL), MAX_REQUEST_BYTES=str(1024 * 1024))
    yield child
    child.stop()


def exchange(port: int, request: bytes, timeout: float) -> tuple[int, dict | str]:
    """Send `request` on a new connection from 127.0.0.1; the answer's status and body (JSON when it is), read
    within `timeout` seconds from the connect, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer):
            connection.settimeout(max(deadline - time.monotonic(), 0.001))
            piece = connection.recv(65536)
            if not piece:
                break
            answer += piece
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


def _length(answer: bytes) -> int:
    head = answer.partition(b"\r\n\r\n")[0].lower()
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: rest\r\nConnection: close\r\n\r\n".encode()


def test_probes_and_the_api_answer_within_the_probe_timeout_under_1100_idle_connections(gunicorn):
    """1,100 connections from the probes' own address that never send a byte, reopened whenever REST closes
    one; the probes and an API call, each on a new connection, are answered within the probes' timeoutSeconds
    all along (before the fix: 2-5 s each, over the liveness probe's 3 s)."""
    timeouts = probe_timeouts()
    calls = [(path, timeout) for path, timeout in timeouts.items()] + [("/apiv1/queue", min(timeouts.values()))]
    with IdleFlood(gunicorn.port, FLOOD):
        started = time.monotonic()
        answered = 0
        while time.monotonic() - started < FLOOD_SECONDS:
            for path, timeout in calls:
                status, _body = exchange(gunicorn.port, get(path), timeout)
                assert status == 200, path
                answered += 1
            time.sleep(0.2)
    assert answered >= 3 * FLOOD_SECONDS  # they came quickly, not just within the timeout


def test_one_address_holds_at_most_its_cap_and_all_together_the_process_cap(capped):
    """Connections that send a request's first byte and then nothing (so the kernel hands them over at once),
    reopened when closed: from one address, REST's two processes keep at most PER_CLIENT each open and close the
    oldest beyond; from six addresses, at most IN_ALL each in all. A probe from yet another address is answered
    all along."""
    timeout = min(probe_timeouts().values())
    for sources, count in [(FLOOD_SOURCES[:1], 600), (FLOOD_SOURCES, 900)]:
        with IdleFlood(capped.port, count, sources, greeting=b"G") as flood:
            for _ in range(10):
                time.sleep(0.3)
                assert exchange(capped.port, get("/healthz"), timeout)[0] == 200
            # Counted once the flood stops reopening and every connection queued has reached REST (each
            # closing an older one), as a count taken meanwhile may see a connection closing and its successor.
            flood.reopening = False
            time.sleep(1.0)
            held = held_by_server(capped.port)
        assert flood.reopened > 0  # the oldest were closed
        assert all(held[source] <= 2 * PER_CLIENT for source in sources), held
        assert sum(held[source] for source in sources) <= 2 * IN_ALL, held
        within_caps = min(count, len(sources) * 2 * PER_CLIENT, 2 * IN_ALL)
        assert sum(held[source] for source in sources) >= within_caps // 2, held  # and it did hold up to them


def test_idle_connections_close_the_oldest_beyond_each_cap():
    pairs = [socket.socketpair() for _ in range(6)]
    ours, theirs = [pair[0] for pair in pairs], [pair[1] for pair in pairs]
    idle = IdleConnections(per_client=2, total=3)
    for index, client in enumerate(["10.0.0.1", "10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.3"]):
        idle.add(ours[index], (client, 40000 + index))
    # The third from 10.0.0.1 closed its first; the fourth connection in all, the oldest left (its second).
    idle.discard(ours[2])  # handling a request: not idle, not counted
    idle.add(ours[5], ("10.0.0.2", 40005))
    assert [_ended(connection) for connection in theirs] == [True, True, False, False, False, False]
    assert len(idle) == 3 and idle.closed == 2
    for pair in pairs:
        for connection in pair:
            connection.close()


def _ended(connection: socket.socket) -> bool:
    connection.setblocking(False)
    try:
        return connection.recv(1) == b""
    except BlockingIOError:
        return False


def test_caps_that_cannot_work_stop_rest_at_start_up(settings, tmp_path):
    log = tmp_path / "rest.log"
    env = child_env(settings, PORT=str(free_port()), MAX_IDLE_CONNECTIONS_PER_CLIENT="0")
    child = Child("rest", GUNICORN, env, log, cwd=ROOT)
    child.start()
    try:
        assert child.process.wait(30) != 0
    finally:
        child.stop()
    assert "MAX_IDLE_CONNECTIONS_PER_CLIENT=0 must be at least 1" in log.read_text()


def test_a_client_is_an_ipv4_address_or_an_ipv6_slash_64():
    assert client_of(("192.0.2.7", 5000)) == "192.0.2.7"
    assert client_of(("2001:db8:0:1::7", 5000, 0, 0)) == client_of(("2001:db8:0:1:ffff::9", 1, 0, 0))
    assert client_of(("2001:db8:0:1::7", 5000, 0, 0)) != client_of(("2001:db8:0:2::7", 5000, 0, 0))
    assert client_of(("::ffff:192.0.2.7", 5000, 0, 0)) == "192.0.2.7"
    assert client_of("") == ""  # a Unix socket
    with pytest.raises(ConfigError, match="MAX_IDLE_CONNECTIONS_PER_CLIENT"):
        IdleConnections(per_client=0, total=10)


def chunked_upload(first_chunk_size: bytes) -> bytes:
    return (b"POST /apiv1/separate HTTP/1.1\r\nHost: rest\r\nContent-Type: audio/mpeg\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + first_chunk_size + b"\r\n" + b"\xff" * 100)


@pytest.mark.parametrize("size", [b"f" * 24, b"f" * 4000, b"%x" % (1024 * 1024 + 1)],
                         ids=["24-hex-digits", "4000-hex-digits", "one-over-max-request-bytes"])
def test_a_chunk_larger_than_any_body_is_refused_at_once(capped, size):
    """Before: gunicorn waited for the chunk until the body deadline, and REST answered 408 after 31 s."""
    status, body = exchange(capped.port, chunked_upload(size), timeout=5)
    assert status == 400, body
    assert body["error"] == "invalid_body" and "larger than the largest request body" in body["message"], body


def test_http_1_1_without_host_is_refused_in_json(gunicorn):
    status, body = exchange(gunicorn.port, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n", 10)
    assert status == 400, body
    assert set(body) == {"error", "message"} and "Host" in body["message"], body
    # RFC 9112 asks Host of HTTP/1.1 only; HTTP/1.0 without it, and HTTP/1.1 with it, are served.
    assert exchange(gunicorn.port, b"GET /healthz HTTP/1.0\r\n\r\n", 10)[0] == 200
    assert exchange(gunicorn.port, get("/healthz"), 10)[0] == 200


def test_a_client_that_never_reads_its_answer_is_cut_off_and_a_steady_one_is_served(settings, redis_client, store,
                                                                                     tmp_path):
    """A client that asks for a track and reads nothing held a greenlet, its connection and the store's for ever:
    3,100 of them took /healthz down. Now it is cut off (here within a minute: BODY_GRACE_SECONDS 1 and
    BODY_MIN_RATE 1 MiB/s) while it still reads nothing, and a client reading at 4 MiB/s gets the whole track."""
    track = tmp_path / "vocals.mp3"
    track.write_bytes(os.urandom(TRACK_BYTES))
    stored_result(redis_client, store, SONGHASH, {"vocals": track})
    child = start_gunicorn(settings, tmp_path / "rest.log", BODY_GRACE_SECONDS="1", BODY_MIN_RATE=str(1 << 20))
    path = f"/apiv1/track/{SONGHASH}/vocals.mp3"
    stalled = socket.socket()
    try:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.bind((STALLED_SOURCE, 0))
        stalled.connect(("127.0.0.1", child.port))
        stalled.sendall(f"GET {path} HTTP/1.1\r\nHost: rest\r\n\r\n".encode())
        wait_for(lambda: held_by_server(child.port)[STALLED_SOURCE] == 1, 10, "REST to take the request")
        steady = _read_steadily(f"http://127.0.0.1:{child.port}{path}", 4 << 20)
        wait_for(lambda: held_by_server(child.port)[STALLED_SOURCE] == 0, 60, "REST to cut off the stalled client")
        received = _drain(stalled)
    finally:
        stalled.close()
        child.stop()
    assert steady == TRACK_BYTES
    assert received < TRACK_BYTES


def _read_steadily(url: str, rate: int) -> int:
    """Bytes of the answer's body, read at about `rate` bytes per second."""
    received = 0
    with requests.get(url, stream=True, timeout=30) as answer:
        assert answer.status_code == 200
        for piece in answer.iter_content(64 * 1024):
            received += len(piece)
            time.sleep(len(piece) / rate)
    return received


def _drain(connection: socket.socket) -> int:
    """Bytes of the answer's body that still reach a client once it reads (the rest was cut off)."""
    connection.settimeout(10)
    answer = b""
    try:
        while piece := connection.recv(1 << 20):
            answer += piece
    except (ConnectionResetError, TimeoutError):
        pass
    return len(answer.partition(b"\r\n\r\n")[2])
