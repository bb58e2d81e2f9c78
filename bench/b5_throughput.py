"""B5 throughput: songs per hour when a batch is submitted at once, with one worker using every core versus
one single-threaded worker per core, alternating."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from bench import songs
from bench.config import Plan
from bench.report import Check, Section, Table, seconds
from bench.stack import Callbacks, Stack, upload

TITLE = "B5 throughput: songs per hour, 1 worker versus one per core"


def run(plan: Plan, scratch: Path) -> list[Section]:
    # (workers, Torch threads each): both use every core this run may use.
    layouts = sorted({(1, plan.cores), (plan.cores, 1)})
    clip = songs.song(plan.b5_seconds).read_bytes()
    elapsed: dict[tuple[int, int], list[float]] = {layout: [] for layout in layouts}
    for rep in range(plan.b5_reps):
        for workers, threads in layouts if rep % 2 == 0 else layouts[::-1]:
            batch = [songs.variant(clip, f"b5-{rep}-{index}") for index in range(plan.b5_songs)]
            took = _batch(plan, scratch / f"b5-{rep}-{workers}x{threads}", workers, threads, batch)
            elapsed[(workers, threads)].append(took)
            print(
                f"B5 run {rep + 1}/{plan.b5_reps}, {workers} worker(s) × {threads} thread(s): {len(batch)} songs "
                f"in {seconds(took)}, {len(batch) / took * 3600:.0f} songs/h",
                flush=True,
            )
    return [_section(plan, elapsed)]


def _batch(plan: Plan, folder: Path, workers: int, threads: int, batch: list[bytes]) -> float:
    """Seconds from the first POST to the last song's tracks stored, on a fresh stack."""
    with Callbacks() as callbacks, Stack(folder, plan.model, workers, plan.worker_env(threads)) as stack:
        requests_ = [upload(mp3, callbacks=callbacks) for mp3 in batch]
        started = time.perf_counter()
        for request in requests_:
            stack.submit(request)
        finished = max(stack.wait_done(callbacks, request.songhash, 4 * 3600) for request in requests_)
    return finished - started


def _section(plan: Plan, elapsed: dict[tuple[int, int], list[float]]) -> Section:
    rows, rates = [], {}
    for (workers, threads), runs in elapsed.items():
        rate = plan.b5_songs / statistics.median(runs) * 3600
        rates[(workers, threads)] = rate
        rows.append(
            [
                str(workers),
                str(threads),
                ", ".join(seconds(run) for run in runs),
                f"{rate:.0f}",
                f"{rate / plan.cores:.1f}",
            ]
        )
    checks = [
        Check(f"{workers} worker(s) × {threads} thread(s)", f"{rate:.0f} songs/h, {rate / plan.cores:.1f} per core")
        for (workers, threads), rate in rates.items()
    ]
    if len(rates) == 2:
        (one, one_rate), (many, many_rate) = sorted(rates.items())
        checks.append(Check(f"{many[0]} workers / {one[0]} worker", f"{many_rate / one_rate:.2f}"))
    return Section(
        TITLE,
        [
            f"{plan.b5_songs} distinct songs of {plan.b5_seconds:g} s submitted at once to a fresh stack; the time is "
            f"from the first POST to the last song's callback (its tracks stored); {plan.b5_reps} run(s) per layout, "
            f"alternating. Per core: divided by the {plan.cores} cores both layouts use. Short songs weigh the per-job "
            "costs (process start, model load) more than real songs would."
        ],
        [("Layouts:", Table(["workers", "threads each", "batch times", "songs/h (median)", "songs/h per core"], rows))],
        checks,
    )
