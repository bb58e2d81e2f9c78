"""GRPC ingest: a 60 MB song uploaded through the gRPC API (client-streamed chunks of 256 KiB) and through
REST's raw upload on the same stack, alternating rounds: time to the answer, and each server's RSS growth."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import songs
from bench.config import Plan, child_env
from bench.measure import PeakRss, idle_rss, tree_anon_rss
from bench.report import Check, Section, Table, seconds
from bench.stack import ROOT, Stack, upload
from devstack.processes import Child, free_port
from msaas.naming import songhash_of
from msaas.uploads import CHUNK
from msaas.v1 import separation_pb2 as pb
from msaas.v1 import separation_pb2_grpc as pb_grpc
from rpc.health import SERVICE

TITLE = "GRPC ingest: a 60 MB song through gRPC (chunks of 256 KiB) and through REST's raw upload"
APIS = ("rest", "grpc")
TARGET_TIME_RATIO = 1.10  # gRPC's median time within 10 % of REST's
TARGET_GROWTH = CHUNK  # gRPC's RSS growth per upload: under one chunk, not the song
MB = 1e6
START_TIMEOUT = 60.0
# The warm-up upload: large enough to go through every buffer a large one uses (whole chunks, the store's
# 256 KiB upload blocks), so that what the song itself costs is what grows after it.
WARM_UP_BYTES = 5_000_000


@dataclass(frozen=True)
class Round:
    api: str
    seconds: float  # first byte sent to the answer
    idle_rss: int
    peak_rss: int
    idle_anon: int  # anonymous RSS: without file-backed pages
    peak_anon: int
    body_bytes: int

    @property
    def growth(self) -> int:
        return self.peak_rss - self.idle_rss

    @property
    def anon_growth(self) -> int:
        return self.peak_anon - self.idle_anon


class RpcService:
    """`python -m rpc` beside the stack's REST, on the same Redis and S3 server."""

    def __init__(self, stack: Stack) -> None:
        self.settings = replace(stack.settings, grpc_port=free_port(), grpc_metrics_port=0)
        self.child = Child("rpc", [sys.executable, "-m", "rpc"], child_env(**self.settings.to_env()),
                           stack.folder / "rpc.log", self.settings.grpc_port, ROOT)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.settings.grpc_port}")
        self.stub = pb_grpc.SeparationServiceStub(self.channel)

    def restart(self) -> None:
        self.child.stop()
        self.child.start()
        self.child.wait_ready(START_TIMEOUT)
        health = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + START_TIMEOUT
        while health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10).status != 1:
            if time.monotonic() > deadline:
                raise RuntimeError(f"rpc not ready within {START_TIMEOUT:.0f} s (see {self.child.log_path})")
            time.sleep(0.2)

    def submit(self, mp3: bytes) -> str:
        return self.stub.Submit(_chunks(mp3), timeout=300).reason


def _chunks(mp3: bytes) -> Iterator[pb.SubmitRequest]:
    song = memoryview(mp3)
    for start in range(0, len(song), CHUNK):
        yield pb.SubmitRequest(chunk=bytes(song[start:start + CHUNK]))


def run(plan: Plan, scratch: Path) -> list[Section]:
    # The song, and one a tenth its size: what grows with the song is the difference between the two.
    mp3s = [songs.song_of_size(size).read_bytes() for size in (plan.grpc_bytes, plan.grpc_bytes // 10)]
    warm_up = songs.song_of_size(WARM_UP_BYTES).read_bytes()
    rounds: list[Round] = []
    with Stack(scratch / "grpc", plan.model, workers=0) as stack:  # no worker: uploads only queue up
        rpc = RpcService(stack)
        try:
            for number in range(plan.grpc_rounds):
                for api in APIS if number % 2 == 0 else APIS[::-1]:
                    for mp3 in mp3s:
                        label = f"{number}-{api}-{len(mp3)}"
                        result = _round(stack, rpc, api, songs.variant(mp3, label),
                                        songs.variant(warm_up, f"warm-{label}"))
                        rounds.append(result)
                        print(f"GRPC round {number + 1}/{plan.grpc_rounds} {api} {len(mp3) / MB:.0f} MB: "
                              f"{seconds(result.seconds)}, anonymous RSS +{result.anon_growth / 1024:.0f} KiB",
                              flush=True)
        finally:
            rpc.child.stop()
    return [_section(plan, mp3s[0], rounds)]


def _round(stack: Stack, rpc: RpcService, api: str, mp3: bytes, warm_up: bytes) -> Round:
    """A fresh server, warmed up with a smaller upload (its lazy imports, threads and buffers are no part of what
    a song's size costs), then the large song, timed, its RSS polled every 20 ms."""
    if api == "rest":
        stack.restart_rest()
        pid = stack.rest_pid

        def send(song: bytes) -> str:
            return stack.submit(upload(song, raw=True))
    else:
        rpc.restart()
        pid = rpc.child.process.pid
        send = rpc.submit
    send(warm_up)
    idle, idle_anon = idle_rss(pid), idle_rss(pid, measure=tree_anon_rss)
    with PeakRss(pid, interval=0.02) as memory, PeakRss(pid, interval=0.02, measure=tree_anon_rss) as anon:
        started = time.perf_counter()
        reason = send(mp3)
        took = time.perf_counter() - started
    if reason != "Song enqueued for separation":
        raise RuntimeError(f"{api}: the song was not queued: {reason}")
    for song in (warm_up, mp3):
        stack.remove(songhash_of(song))  # the S3 server keeps objects in memory
    return Round(api, took, idle, memory.peak, idle_anon, anon.peak, len(mp3))


def _section(plan: Plan, mp3: bytes, rounds: list[Round]) -> Section:
    rows = [[str(index), result.api, f"{result.body_bytes / MB:.1f} MB", seconds(result.seconds),
             f"{result.idle_rss / MB:.1f} MB", f"{result.peak_rss / MB:.1f} MB", f"{result.growth / MB:.1f} MB",
             f"{result.idle_anon / MB:.1f} MB", f"{result.anon_growth / 1024:.0f} KiB"]
            for index, result in enumerate(rounds, start=1)]
    large, small = len(mp3), len(mp3) // 10

    def of(api: str, size: int) -> list[Round]:
        return [result for result in rounds if result.api == api and abs(result.body_bytes - size) < 0.05 * size]

    median = {api: statistics.median(result.seconds for result in of(api, large)) for api in APIS}
    worst = {api: max(result.anon_growth for result in of(api, large)) for api in APIS}
    worst_total = {api: max(result.growth for result in of(api, large)) for api in APIS}
    # What the song's size adds: the large song's median growth over the small one's.
    by_size = {api: statistics.median(r.anon_growth for r in of(api, large))
               - statistics.median(r.anon_growth for r in of(api, small)) for api in APIS}
    ratio = median["grpc"] / median["rest"]
    checks = [
        Check(f"REST raw: median time, {large / MB:.0f} MB", seconds(median["rest"])),
        Check(f"gRPC: median time, {large / MB:.0f} MB", seconds(median["grpc"])),
        Check("gRPC / REST time", f"{ratio:.2f}", f"≤ {TARGET_TIME_RATIO:.2f}", ratio <= TARGET_TIME_RATIO),
        Check("REST raw: RSS growth (all pages), worst round", f"{worst_total['rest'] / MB:.1f} MB"),
        Check("gRPC: RSS growth (all pages), worst round", f"{worst_total['grpc'] / MB:.1f} MB"),
        Check("REST raw: anonymous RSS growth, worst round", f"{worst['rest'] / 1024:.0f} KiB"),
        Check("gRPC: anonymous RSS growth, worst round", f"{worst['grpc'] / 1024:.0f} KiB",
              f"< {TARGET_GROWTH // 1024} KiB (one chunk)", worst["grpc"] < TARGET_GROWTH),
        Check(f"REST raw: anonymous growth, {large / MB:.0f} MB over {small / MB:.0f} MB (medians)",
              f"{by_size['rest'] / 1024:.0f} KiB"),
        Check(f"gRPC: anonymous growth, {large / MB:.0f} MB over {small / MB:.0f} MB (medians)",
              f"{by_size['grpc'] / 1024:.0f} KiB", f"< {TARGET_GROWTH // 1024} KiB (not the song's size)",
              by_size["grpc"] < TARGET_GROWTH),
    ]
    notes = [
        f"One client uploads a {large / MB:.1f} MB MP3 (320 kbps, {large * 8 / 320e3 / 60:.0f} min), and one a "
        f"tenth its size, each with a distinct ID3 tag each round, so every upload is new and goes the whole way "
        f"(hashed, spooled, checked, stored, queued); {plan.grpc_rounds} rounds per API, alternating: REST "
        "(gunicorn, as deployed) with a raw body (`Content-Type: audio/mpeg`), and `python -m rpc` with the song in "
        "256 KiB messages, from the grpcio client. Both behind the same Redis and S3 server (moto), no worker; "
        "client and servers share this machine's CPUs.",
        f"Each upload restarts the server measured and warms it up with a {WARM_UP_BYTES / MB:.0f} MB song. Time: "
        "from the first byte sent to the answer. Growth: the server's peak RSS (REST: gunicorn's master and "
        "workers, summed), polled every 20 ms, minus its median RSS over the second before (MB = 10^6 bytes, "
        "KiB = 1024 bytes); anonymous: the same of RssAnon, the memory the process allocated itself (heap, "
        "message buffers).",
        "Both APIs' RSS counted with file-backed pages grows by about the song: `msaas/mp3.py` maps the spooled "
        "file (mmap) to walk its frames, and those pages of the page cache count in the process' RSS while mapped. "
        "They are the file's, reclaimable, and the same for both APIs; the memory an upload costs the server "
        "itself is the anonymous growth, on which the targets are set.",
        "The server takes in one chunk at a time (rpc/__init__.py: no BDP probes, a flow-control window of one "
        "chunk; with gRPC's defaults the window grew and each 60 MB upload held 10-20 MB), but grpcio holds each "
        "message about three times while it is read (the transport's buffer, the serialized bytes, the parsed "
        "message's field), so about a megabyte is the floor of what one upload in flight holds, whatever its size.",
    ]
    table = Table(["round", "api", "song", "time", "idle RSS", "peak RSS", "growth", "idle anonymous",
                   "anonymous growth"], rows)
    return Section(TITLE, notes, [("Rounds:", table)], checks)
