"""B4 repeats: how fast a song already separated is answered when submitted again, as base64 JSON and as a
raw body alternately, and proof that no worker ran for it."""

from __future__ import annotations

import time
from pathlib import Path

import requests

from bench import songs
from bench.config import Plan
from bench.measure import percentile
from bench.report import Check, Section, Table, ms, seconds
from bench.stack import Callbacks, Stack, upload

TITLE = "B4 repeats: re-submitting a finished song"
KINDS = ("json", "raw")
TARGET_P99 = 0.020  # seconds
ALREADY_DONE = "Song already separated"  # how rest/submission.py's answer for a finished song begins
SETTLE_SECONDS = 1.0  # a job queued by mistake would be in the worker's hands by then


def run(plan: Plan, scratch: Path) -> list[Section]:
    song = songs.song(plan.clip_seconds)
    mp3 = song.read_bytes()
    latencies: dict[str, list[float]] = {kind: [] for kind in KINDS}
    unexpected: list[str] = []
    with Callbacks() as callbacks, Stack(scratch / "b4", plan.model, worker_env=plan.worker_env(plan.cores)) as stack:
        first = stack.separate(callbacks, mp3)
        print(
            f"B4: first separation {seconds(first.seconds)}; now {plan.b4_repeats} re-submissions of each kind",
            flush=True,
        )
        jobs_before = stack.worker_metric("msaas_jobs_completed_total")
        requests_ = {kind: upload(mp3, raw=kind == "raw") for kind in KINDS}
        with requests.Session() as session:  # one client, keeping its connection, as a script would
            for number in range(plan.b4_repeats):
                for kind in KINDS if number % 2 == 0 else KINDS[::-1]:
                    started = time.perf_counter()
                    answer = stack.post(requests_[kind], session)
                    latencies[kind].append(time.perf_counter() - started)
                    if answer.status_code != 200 or not answer.json().get("reason", "").startswith(ALREADY_DONE):
                        unexpected.append(f"{kind}: {answer.status_code} {answer.text[:200]}")
        time.sleep(SETTLE_SECONDS)
        worker_jobs = stack.worker_metric("msaas_jobs_completed_total") - jobs_before
        worker_busy = stack.worker_metric("msaas_worker_processing_depth")
        queued = len(stack.queued())
    for kind in KINDS:
        print(
            f"B4 {kind}: p50 {ms(percentile(latencies[kind], 50))}, p99 {ms(percentile(latencies[kind], 99))}",
            flush=True,
        )
    return [_section(plan, song, first.seconds, latencies, unexpected, worker_jobs + worker_busy + queued)]


def _section(
    plan: Plan, song: Path, first: float, latencies: dict[str, list[float]], unexpected: list[str], worker_work: float
) -> Section:
    rows = [
        [kind, str(len(values)), *(ms(percentile(values, p)) for p in (50, 95, 99)), ms(max(values))]
        for kind, values in latencies.items()
    ]
    checks = [
        Check(
            f"{kind}: latency p99",
            ms(percentile(values, 99)),
            f"≤ {ms(TARGET_P99)}",
            percentile(values, 99) <= TARGET_P99,
        )
        for kind, values in latencies.items()
    ]
    checks += [
        Check('answers other than "already separated"', str(len(unexpected)), "0", not unexpected),
        Check("worker jobs started or queued by the re-submissions", f"{worker_work:g}", "0", worker_work == 0),
    ]
    notes = [
        f"`{song.name}` ({len(song.read_bytes()) / 1e6:.2f} MB) separated once through the service (took "
        f"{seconds(first)}), then POSTed again {plan.b4_repeats} times as base64 JSON and {plan.b4_repeats} times "
        "raw, alternating, one after another from one client on a kept-alive connection. Latency: request sent "
        "to answer read.",
        f"Worker work: the worker's completed-jobs counter after minus before, plus its processing depth and the "
        f"queue length {SETTLE_SECONDS:g} s after the last re-submission.",
    ]
    if unexpected:
        notes.append(f"First unexpected answer: {unexpected[0]}")
    return Section(TITLE, notes, [("Latency:", Table(["kind", "requests", "p50", "p95", "p99", "max"], rows))], checks)
