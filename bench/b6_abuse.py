"""B6 faults and abuse: what hostile and slow clients cost REST as deployed (gunicorn, rest/gunicorn.conf.py).

1. Memory: REST's peak resident memory (the whole gunicorn tree) while 6 clients at once send 60 MB hostile JSON
   bodies (one huge field each), against its idle memory.
2. Slow clients: /healthz latency, probed as a kubelet would (a new connection each time), while 32 clients
   drip their headers or bodies a byte every 2 s and reconnect whenever they are cut off.
3. Hostile-input sweep: every route and field gets wrong JSON types, non-finite numbers, huge fields,
   malformed URLs, lying Content-Lengths, bad methods, junk bytes, truncated bodies...; every 5xx is listed
   with its request.
A worker stalled by a hostile webhook receiver is measured by B6_STALL (bench/b6_stall.py), with a worker.

The stack has no worker for 1-3: nothing they send should ever reach one.
"""

from __future__ import annotations

import base64
import json
import random
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.config import Plan
from bench.measure import MiB, PeakRss, idle_rss, percentile
from bench.report import Check, Section, mib, ms
from bench.stack import Stack
from msaas.options import SPECS

TITLE = "B6 faults and abuse: hostile and slow clients"
ROOT = Path(__file__).resolve().parent.parent
SONG = (ROOT / "data" / "short-hum.mp3").read_bytes()
HOSTILE_BODIES = 6
HOSTILE_BYTES = 60 * 1000 * 1000
TARGET_GROWTH = 100 * MiB
SLOW_CLIENTS = 32
DRIP_EVERY = 2.0  # seconds between two bytes of a slow client
TARGET_PROBE_P99 = 0.100
PROBE_EVERY = 0.1
PROBE_TIMEOUT = 2.0  # an answer later than this counts as a failed probe (a kubelet's default timeout is 1 s)
SONGHASH = "0" * 56


SWEEP_SEED = 6


def run(plan: Plan, scratch: Path) -> list[Section]:
    with Stack(scratch / "b6", plan.model, workers=0, rest_env={"RATE_LIMIT_PER_MINUTE": "0"}) as stack:
        memory = _hostile_bodies(stack)
        print(f"B6 memory: idle {mib(memory.idle)}, peak {mib(memory.peak)}, answers {memory.answers}", flush=True)
        probes = _slow_clients(stack, plan.b6_slow_seconds)
        print(f"B6 probes: p50 {ms(probes.p50)}, p99 {ms(probes.p99)}, failed {probes.failed}", flush=True)
        sweep = _sweep(stack, SWEEP_SEED)
        print(f"B6 sweep: {sweep.tried} requests, {len(sweep.server_errors)} 5xx", flush=True)
    return [_section(memory, probes, sweep, plan.b6_slow_seconds)]


# 1. Memory under hostile bodies.


@dataclass(frozen=True)
class Memory:
    idle: int
    peak: int
    answers: dict[str, int]  # status -> count

    @property
    def growth(self) -> int:
        return self.peak - self.idle


def _hostile_bodies(stack: Stack) -> Memory:
    """6 bodies at once, each one field of 60 MB: an array of zeros (the attack seen), the callback's data,
    a field name, and a top-level array that is no object at all."""
    bodies = [b'{"x": [', b'{"callback": {"url": "http://example.com/", "data": "', b'{"', b"[",
              b'{"mp3": [', b'{"x": [']
    answers: dict[str, int] = {}
    idle = idle_rss(stack.rest_pid)
    with PeakRss(stack.rest_pid, interval=0.02) as memory:
        threads = [threading.Thread(target=lambda head=head: _count(answers, _huge(stack.settings.port, head)))
                   for head in bodies[:HOSTILE_BODIES]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        time.sleep(1.0)  # anything held after the answers shows too
    return Memory(idle, memory.peak, answers)


def _huge(port: int, head: bytes) -> str:
    """POST a 60 MB JSON body that starts with `head` and goes on with zeros, until answered; the status."""
    filler = b"0," * (128 * 1024) if head.endswith(b"[") else b"0" * (256 * 1024)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        connection.sendall(
            f"POST /apiv1/separate HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {HOSTILE_BYTES}\r\n\r\n".encode() + head
        )
        sent = len(head)
        while sent < HOSTILE_BYTES and not select.select([connection], [], [], 0)[0]:
            piece = filler[: HOSTILE_BYTES - sent]
            try:
                connection.sendall(piece)
            except OSError:
                break  # the server answered and closed
            sent += len(piece)
        return _status(_read_head(connection, b""))


def _read_head(connection: socket.socket, start: bytes) -> bytes:
    more = b""
    try:
        while b"\r\n" not in start + more and (piece := connection.recv(4096)):
            more += piece
    except OSError:
        pass
    return more


def _status(answer: bytes) -> str:
    parts = answer.split(b" ", 2)
    return parts[1].decode() if len(parts) > 1 and answer.startswith(b"HTTP/") else "no answer"


def _count(counts: dict[str, int], status: str) -> None:
    counts[status] = counts.get(status, 0) + 1


# 2. Probes under slow clients.


@dataclass(frozen=True)
class Probes:
    latencies: list[float]
    failed: int

    @property
    def p50(self) -> float:
        return percentile(self.latencies, 50) if self.latencies else float("inf")

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 99) if self.latencies else float("inf")


def _slow_clients(stack: Stack, seconds: float) -> Probes:
    port = stack.settings.port
    header = b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Slow: " + b"s" * 100 + b"\r\n\r\n"
    body = (b"POST /apiv1/separate HTTP/1.1\r\nHost: bench\r\nContent-Type: audio/mpeg\r\nContent-Length: 100000"
            b"\r\n\r\n" + b"\0" * 100000)
    stopping = threading.Event()
    drippers = [threading.Thread(target=_drip, args=(port, request, stopping), daemon=True)
                for request in [header] * (SLOW_CLIENTS // 2) + [body] * (SLOW_CLIENTS - SLOW_CLIENTS // 2)]
    for dripper in drippers:
        dripper.start()
    time.sleep(2 * DRIP_EVERY)  # every slow client connected and dripping
    latencies, failed = [], 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            answered = _probe(port)
            latencies.append(time.perf_counter() - started)  # a failed probe counts with the time it took
            failed += not answered
            time.sleep(PROBE_EVERY)
    finally:
        stopping.set()
        for dripper in drippers:
            dripper.join(DRIP_EVERY + 5)
    return Probes(latencies, failed)


def _drip(port: int, request: bytes, stopping: threading.Event) -> None:
    """One slow client: a byte every DRIP_EVERY seconds, a new connection whenever the server ends one."""
    while not stopping.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
                for byte in request:
                    if stopping.wait(DRIP_EVERY):
                        return
                    connection.sendall(bytes([byte]))
        except OSError:
            stopping.wait(0.1)


def _probe(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT) as connection:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            return connection.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


# 3. The hostile-input sweep.


@dataclass(frozen=True)
class Sweep:
    tried: int
    by_class: dict[str, int]  # "2xx", "4xx", "5xx", "no answer"
    server_errors: list[str]  # "<status> <request>" of each 5xx
    unanswered: list[str]  # the requests whose connection was closed without an answer


def _sweep(stack: Stack, seed: int) -> Sweep:
    by_class: dict[str, int] = {}
    server_errors, unanswered = [], []
    tried = 0
    for what, request in _hostile_requests(random.Random(seed)):
        status = _exchange(stack.settings.port, request)
        tried += 1
        kind = f"{status[0]}xx" if status[0].isdigit() else status
        _count(by_class, kind)
        if kind == "5xx":
            server_errors.append(f"{status} {what}")
        elif kind == "no answer":
            unanswered.append(what)
    return Sweep(tried, by_class, server_errors, unanswered)


def _exchange(port: int, request: bytes) -> str:
    """Send `request` as it is, say the client is done, and read the answer's status."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
            try:
                connection.sendall(request)
                connection.shutdown(socket.SHUT_WR)  # a body shorter than announced ends here
            except OSError:
                pass  # answered and closed early (a 413 while the body was still going): read the answer
            return _status(_read_head(connection, b""))
    except OSError:
        return "no answer"


NOT_AN_MP3 = base64.b64encode(b"not an mp3 at all").decode()
SONG_BASE64 = base64.b64encode(SONG).decode()
RAW_JSON = ["null", "true", "false", "0", "-1", "1.5", "1e400", "-1e400", "NaN", "Infinity", "-Infinity",
            "1" + "0" * 500, '""', '"x"', "[]", "{}", '[1, "a", null]', '{"a": {"b": []}}', "[" * 5000 + "]" * 5000,
            '"' + "h" * 70_000 + '"', "[" + "0," * 40_000 + "0]", '"\\ud800"', '"\\u0000"']
MALFORMED_URLS = ["http://[::1", "http://[zz]/", "http://host:99999/", "http://host:port/", "http:///x", "://x",
                  "http://", "http://%zz/", "http://\\u0000/", "javascript:alert(1)", "ftp://example.com/",
                  "http://user@:80/", "http://" + "a" * 70_000 + ".com/", "http://127.0.0.1:9/", "http://[::]/"]
# The options come from the table (msaas/options.py), so an option added later is attacked too.
FIELDS = ["mp3", *(spec.name for spec in SPECS), "callback", "callback.url", "callback.data", "x"]
QUERY_TEXT = ["", "nan", "inf", "-inf", "1e400", "NaN", "[]", "{}", "\u00e9", "%00", "%ff", "a" * 3000, "0x10",
              "320.0", "64 ", "vocals\u0000", "../../etc", "http://[::1", "http://%zz/"]
OPTIONS = [*(spec.name for spec in SPECS), "callback_url", "redirect"]
READ_ROUTES = [("GET", f"/apiv1/status/{SONGHASH}"), ("GET", f"/apiv1/track/{SONGHASH}/vocals.mp3"),
               ("GET", f"/apiv1/remove/{SONGHASH}/vocals"), ("DELETE", f"/apiv1/remove/{SONGHASH}/vocals")]
ALL_ROUTES = [("GET", "/"), ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"),
              ("GET", "/apiv1/openapi.json"), ("GET", "/apiv1/queue"), ("POST", "/apiv1/separate"),
              ("DELETE", f"/apiv1/remove/{SONGHASH}"), *READ_ROUTES, ("GET", "/static/app.js")]


def _http(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
          length: int | str | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: bench"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if length != "none":
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


def _json_body(field: str, raw: str) -> str:
    if field == "callback.url":
        return f'{{"mp3": "{NOT_AN_MP3}", "callback": {{"url": {raw}}}}}'
    if field == "callback.data":
        return f'{{"mp3": "{SONG_BASE64}", "callback": {{"url": "http://example.com/", "data": {raw}}}}}'
    if field == "mp3":
        return f'{{"mp3": {raw}}}'
    return f'{{"mp3": "{NOT_AN_MP3}", "{field}": {raw}}}'


def _hostile_requests(rng: random.Random) -> Iterator[tuple[str, bytes]]:
    """(what, raw request bytes) for every hostile case."""
    json_type = {"Content-Type": "application/json"}
    # Wrong types, non-finite and huge numbers, huge values, malformed URLs, in every JSON field.
    for field in FIELDS:
        for raw in RAW_JSON + [json.dumps(url) for url in MALFORMED_URLS]:
            body = _json_body(field, raw)
            yield f"POST /apiv1/separate JSON {field}={raw[:40]!r}", _http("POST", "/apiv1/separate",
                                                                            body.encode(), json_type)
    # The same words in every option of the query string: raw upload and every read route.
    for option in OPTIONS:
        for value in QUERY_TEXT:
            query = f"?{option}={_quote(value)}"
            yield f"POST /apiv1/separate raw {query[:60]}", _http("POST", "/apiv1/separate" + query, SONG[:4096],
                                                                   {"Content-Type": "audio/mpeg"})
            for method, path in READ_ROUTES:
                yield f"{method} {path}{query[:60]}", _http(method, path + query, length="none")
    # Malformed path parameters.
    for songhash in ["", "x", "0" * 55, "0" * 57, "G" * 56, "%00", "..%2F..%2Fetc", "\u00e9" * 56, "0" * 5000]:
        for track in ["vocals", "", "x", "vocals.exe", "vocals.mp3.mp3", "%2e%2e", "no_" * 100]:
            path = f"/apiv1/track/{_quote(songhash)}/{_quote(track)}"
            yield f"GET {path[:80]}", _http("GET", path, length="none")
        yield f"GET /apiv1/status/{songhash[:40]}", _http("GET", f"/apiv1/status/{_quote(songhash)}", length="none")
    # Bad methods on every route.
    for method, path in ALL_ROUTES:
        for bad in ["PUT", "PATCH", "TRACE", "CONNECT", "PROPFIND", "".join(rng.choices("QWERTYUIOP", k=16)),
                    "get", "G" * 30, "POST" if method != "POST" else "GET"]:
            yield f"{bad} {path}", _http(bad, path, length="none")
    # Lying and malformed lengths and framing.
    body = json.dumps({"mp3": SONG_BASE64}).encode()
    for length in [len(body) + 1000, len(body) // 2, 0, -1, "abc", "1e3", " 10", "99999999999999999999"]:
        yield f"POST /apiv1/separate Content-Length {length!r}", _http("POST", "/apiv1/separate", body, json_type,
                                                                       length)
    yield "two Content-Lengths", _http("POST", "/apiv1/separate", body, {**json_type, "Content-Length": "5"})
    yield "Content-Length and chunked", _http("POST", "/apiv1/separate", b"5\r\nhello\r\n0\r\n\r\n",
                                              {**json_type, "Transfer-Encoding": "chunked"})
    for chunks in [b"zz\r\nhello\r\n0\r\n\r\n", b"5\r\nhel", b"ffffffffffff\r\n", b"5;" + b"x" * 9000 + b"\r\n"]:
        yield f"chunked {chunks[:20]!r}", _http("POST", "/apiv1/separate", chunks,
                                                {**json_type, "Transfer-Encoding": "chunked"}, length="none")
    # Truncated bodies, said to be complete.
    for cut in sorted(rng.sample(range(1, len(body)), 20)):
        yield f"JSON body cut at byte {cut}", _http("POST", "/apiv1/separate", body[:cut], json_type)
    for cut in [1, 100, 1000, len(SONG) // 2]:
        yield f"raw song cut at byte {cut}", _http("POST", "/apiv1/separate", SONG[:cut],
                                                   {"Content-Type": "audio/mpeg"})
    # Content types and multipart bodies.
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                         "multipart/form-data; boundary=", "application/json; charset=utf-16", "audio/mpeg; x=\"",
                         "x" * 5000]:
        yield f"Content-Type {content_type[:40]}", _http("POST", "/apiv1/separate", body,
                                                         {"Content-Type": content_type})
    yield from _multipart_cases()
    # Junk: bytes that are not HTTP, and HTTP that is broken.
    for junk in [bytes(rng.getrandbits(8) for _ in range(200)) for _ in range(10)] + [
        b"\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET / HTTP/1.1\r\nHost: bench\r\nNo colon here\r\n\r\n", b"GET /\x00 HTTP/1.1\r\nHost: bench\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: bench\r\nX: \xff\xfe\r\n\r\n", b"GET / HTTP/1.1\r\n Folded: x\r\n\r\n",
        b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\nX: " + b"b" * 10_000 + b"\r\n\r\n",
    ]:
        yield f"junk {junk[:24]!r}", junk
    # Authorization headers of every shape (keys are off here: they must still not break anything).
    for value in ["Bearer", "Bearer ", "Basic xx", "Bearer " + "k" * 5000, "Bearer \u00e9".encode().decode("latin-1")]:
        yield f"Authorization {value[:30]!r}", _http("GET", "/apiv1/queue", headers={"Authorization": value},
                                                     length="none")


def _multipart_cases() -> Iterator[tuple[str, bytes]]:
    def multipart(parts: list[tuple[str, bytes, str | None]], boundary: str = "b0undary") -> bytes:
        out = b""
        for name, value, filename in parts:
            disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
            out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
        return out + f"--{boundary}--\r\n".encode()

    content_type = {"Content-Type": "multipart/form-data; boundary=b0undary"}
    song = ("mp3", SONG, "song.mp3")
    cases = {
        "no parts": [],
        "mp3 as a field, not a file": [("mp3", SONG, None)],
        "huge field": [song, ("x", b"a" * 100_000, None)],
        "200 fields": [song, *[(f"f{n}", b"1", None) for n in range(200)]],
        "hostile options": [song, ("model", b"[]", None), ("mp3_bitrate", b"1e400", None), ("format", b"{}", None)],
        "malformed callback_url": [song, ("callback_url", b"http://[::1", None)],
        "two mp3 files": [song, song],
    }
    for what, parts in cases.items():
        yield f"multipart: {what}", _http("POST", "/apiv1/separate", multipart(parts), content_type)
    yield "multipart cut short", _http("POST", "/apiv1/separate", multipart([song])[:5000], content_type)


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="%/")


def _section(memory: Memory, probes: Probes, sweep: Sweep, slow_seconds: float) -> Section:
    answers = ", ".join(f"{status}: {count}" for status, count in sorted(memory.answers.items()))
    classes = ", ".join(f"{kind}: {count}" for kind, count in sorted(sweep.by_class.items()))
    notes = [
        f"Memory: {HOSTILE_BODIES} clients at once each POST a {HOSTILE_BYTES / 1e6:.0f} MB JSON body that is one "
        "huge value (an array of zeros in an unknown field, as in the attack seen; the callback's data; a field "
        "name; a top-level array; an array as `mp3`), sending on until answered. RSS of gunicorn's master and "
        f"workers, summed, polled every 20 ms, against its median over 1 s idle before. Answers: {answers}.",
        f"Probes: {SLOW_CLIENTS} slow clients (half drip a request's headers, half a 100 kB body, a byte every "
        f"{DRIP_EVERY:g} s, reconnecting when cut off) while /healthz is probed every {PROBE_EVERY * 1000:.0f} ms "
        f"on a new connection for {slow_seconds:g} s; a probe unanswered within {PROBE_TIMEOUT:g} s fails, and counts "
        "in the percentiles with the time it took.",
        f"Sweep: {sweep.tried} hostile requests, sent as raw bytes (seed {SWEEP_SEED}), each on its own "
        f"connection: answers by class {classes}.",
    ]
    if sweep.unanswered:
        notes.append("Closed without an answer (gunicorn drops what is not an HTTP request at all): "
                     + "; ".join(f"`{what}`" for what in sweep.unanswered) + ".")
    if sweep.server_errors:
        notes.append("Every 5xx, with its request:\n\n" + "\n".join(f"- `{error}`" for error in sweep.server_errors))
    checks = [
        Check("REST memory growth under 6 × 60 MB hostile bodies", mib(memory.growth), f"< {mib(TARGET_GROWTH)}",
              memory.growth < TARGET_GROWTH),
        Check("REST peak memory (gunicorn tree)", mib(memory.peak)),
        Check("/healthz p50 under slow clients", ms(probes.p50)),
        Check("/healthz p99 under slow clients", ms(probes.p99), f"< {ms(TARGET_PROBE_P99)}",
              probes.p99 < TARGET_PROBE_P99 and probes.failed == 0),
        Check("/healthz probes failed", f"{probes.failed} of {len(probes.latencies)}", "0", probes.failed == 0),
        Check("hostile requests tried", str(sweep.tried)),
        Check("5xx answers", str(len(sweep.server_errors)), "0", not sweep.server_errors),
    ]
    return Section(TITLE, notes, [], checks)
