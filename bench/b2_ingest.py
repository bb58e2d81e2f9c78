"""B2 ingest: many clients upload a large MP3 at the same moment, as base64 in JSON and as a raw body,
alternating rounds: errors, latency and the REST service's peak memory (gunicorn master and workers)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from bench import songs
from bench.config import Plan
from bench.measure import PeakRss, cpu_seconds, idle_rss, percentile, tree_cpu_seconds
from bench.report import Check, Section, Table, seconds
from bench.stack import Stack, Upload, upload

TITLE = "B2 ingest: concurrent uploads of a 10 MB MP3"
KINDS = ("raw", "json")
TARGET_P95 = 1.0  # seconds
TARGET_RAW_GROWTH = 100e6  # bytes, for all the raw uploads together
TARGET_JSON_COPIES = 1.25  # "at most about one copy of each in-flight body"
MB = 1e6
WARM_UP_SECONDS = 2


@dataclass(frozen=True)
class Round:
    kind: str
    latencies: list[float]  # seconds, every request, failed ones included
    errors: list[str]
    idle_rss: int
    peak_rss: int
    body_bytes: int  # one request's body
    wall: float  # first request sent to last answer
    cpu: tuple[float, float]  # CPU seconds REST (master and workers) and the S3 server spent on the round

    @property
    def growth(self) -> int:
        return self.peak_rss - self.idle_rss

    @property
    def copies(self) -> float:
        """The growth in bodies: 1.0 is one copy of every request's body in memory at once."""
        return self.growth / (len(self.latencies) * self.body_bytes)


def run(plan: Plan, scratch: Path) -> list[Section]:
    mp3 = songs.song_of_size(plan.b2_bytes).read_bytes()
    warm_up = songs.song(WARM_UP_SECONDS).read_bytes()
    rounds: list[Round] = []
    with Stack(scratch / "b2", plan.model, workers=0) as stack:  # no worker: uploads only queue up
        for number in range(plan.b2_rounds):
            for kind in KINDS if number % 2 == 0 else KINDS[::-1]:
                result = _round(stack, kind, mp3, warm_up, plan.b2_clients, f"{number}")
                rounds.append(result)
                print(
                    f"B2 round {number + 1}/{plan.b2_rounds} {kind}: {len(result.errors)} errors, "
                    f"p95 {seconds(percentile(result.latencies, 95))}, REST RSS {result.idle_rss / MB:.0f} -> "
                    f"{result.peak_rss / MB:.0f} MB",
                    flush=True,
                )
    return [_section(plan, mp3, rounds)]


def _round(stack: Stack, kind: str, mp3: bytes, warm_up: bytes, clients: int, label: str) -> Round:
    """A fresh REST service, warmed up with small uploads, then `clients` large ones at once."""
    raw = kind == "raw"
    stack.restart_rest()
    # Spins up gunicorn's threads and the lazy imports, which are no part of an upload's cost.
    warm = [upload(songs.variant(warm_up, f"warm-{label}-{kind}-{index}"), raw) for index in range(clients)]
    _all_at_once(stack, warm)
    bodies = [upload(songs.variant(mp3, f"{label}-{kind}-{index}"), raw) for index in range(clients)]
    idle = idle_rss(stack.rest_pid)
    s3_pid = stack.s3.process.pid
    cpu_before = tree_cpu_seconds(stack.rest_pid), cpu_seconds(s3_pid)
    with PeakRss(stack.rest_pid, interval=0.05) as memory:
        started = time.perf_counter()
        outcomes = _all_at_once(stack, bodies)
        wall = time.perf_counter() - started
    cpu = tree_cpu_seconds(stack.rest_pid) - cpu_before[0], cpu_seconds(s3_pid) - cpu_before[1]
    for request in warm + bodies:
        stack.remove(request.songhash)  # each round starts from empty buckets
    latencies = [latency for latency, _ in outcomes]
    errors = [error for _, error in outcomes if error]
    return Round(kind, latencies, errors, idle, memory.peak, len(bodies[0].data), wall, cpu)


def _all_at_once(stack: Stack, uploads: list[Upload]) -> list[tuple[float, str | None]]:
    """Each upload from a thread of its own, released together: (seconds, error or None) for each."""
    start = threading.Barrier(len(uploads))
    outcomes: list[tuple[float, str | None]] = [(0.0, "not sent")] * len(uploads)

    def client(index: int) -> None:
        start.wait()
        began = time.perf_counter()
        try:
            answer = stack.post(uploads[index])
            error = None if answer.status_code == 200 else f"{answer.status_code}: {answer.text[:200]}"
        except requests.RequestException as failure:
            error = str(failure)
        outcomes[index] = (time.perf_counter() - began, error)

    threads = [threading.Thread(target=client, args=(index,)) for index in range(len(uploads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


ROUND_COLUMNS = (
    "round, kind, body, errors, p50, p95, max, round wall, REST CPU, S3 CPU, idle RSS, peak RSS, growth, "
    "growth per body"
)


def _section(plan: Plan, mp3: bytes, rounds: list[Round]) -> Section:
    rows = [_row(index, result) for index, result in enumerate(rounds, start=1)]
    checks = [check for kind in KINDS for check in _checks(kind, [result for result in rounds if result.kind == kind])]
    errors = [error for result in rounds for error in result.errors]
    notes = [
        f"{plan.b2_clients} clients, each with its own {len(mp3) / MB:.1f} MB MP3 (320 kbps; a distinct ID3 tag each, "
        "so every upload is new and goes the whole way: checked, stored, queued), sent at the same moment; "
        f"{plan.b2_rounds} rounds per kind, alternating. No worker runs; the clients, REST and the S3 server "
        "(SeaweedFS `weed mini`, objects on disk) share this machine's CPUs.",
        "Each round starts a fresh REST service (gunicorn, as deployed) and warms it up with as many small uploads; "
        "growth is the peak RSS of gunicorn's master and workers (summed, polled every 50 ms) minus their median "
        "RSS over the second before; growth per body: over clients × body size, the bodies in flight at once "
        "(MB = 10^6 bytes). CPU: seconds REST (all its processes) and the S3 server spent during the round; "
        "with the clients', they bound the round's wall time from below on this machine's cores.",
    ]
    if errors:
        notes.append(f"First error: {errors[0]}")
    return Section(TITLE, notes, [("Rounds:", Table(ROUND_COLUMNS.split(", "), rows))], checks)


def _row(index: int, result: Round) -> list[str]:
    latencies = result.latencies
    return [
        str(index),
        result.kind,
        f"{result.body_bytes / MB:.1f} MB",
        str(len(result.errors)),
        *(seconds(percentile(latencies, p)) for p in (50, 95)),
        seconds(max(latencies)),
        seconds(result.wall),
        *(seconds(value) for value in result.cpu),
        *(f"{value / MB:.0f} MB" for value in (result.idle_rss, result.peak_rss, result.growth)),
        f"{result.copies:.2f}",
    ]


def _checks(kind: str, rounds: list[Round]) -> list[Check]:
    latencies = [latency for result in rounds for latency in result.latencies]
    errors = sum(len(result.errors) for result in rounds)
    p95 = percentile(latencies, 95)
    checks = [
        Check(f"{kind}: errors ({len(latencies)} requests)", str(errors), "0", errors == 0),
        Check(f"{kind}: latency p50 / p99", " / ".join(seconds(percentile(latencies, p)) for p in (50, 99))),
        Check(f"{kind}: latency p95", seconds(p95), f"≤ {seconds(TARGET_P95)}", p95 <= TARGET_P95),
    ]
    if kind == "raw":
        growth = max(result.growth for result in rounds)
        limit = f"≤ {TARGET_RAW_GROWTH / MB:.0f} MB"
        checks.append(
            Check("raw: RSS growth, worst round", f"{growth / MB:.0f} MB", limit, growth <= TARGET_RAW_GROWTH)
        )
    else:
        copies = max(result.copies for result in rounds)
        limit = f"≤ {TARGET_JSON_COPIES} (about one)"
        checks.append(
            Check(
                "json: RSS growth per in-flight body, worst round",
                f"{copies:.2f} copies",
                limit,
                copies <= TARGET_JSON_COPIES,
            )
        )
    return checks
