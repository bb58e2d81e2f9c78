"""B5 throughput: songs per hour when a batch of songs of ordinary length is submitted at once, with the worker's
default layout versus one worker running Demucs on Torch's threads as bare Demucs does (the layout before issue
14), and in full mode one single-CPU worker per core, alternating."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from bench import songs
from bench.config import Plan
from bench.report import Check, Section, Table, seconds
from bench.stack import Callbacks, Stack, upload

TITLE = "B5 throughput: songs per hour by layout"


@dataclass(frozen=True)
class Layout:
    name: str
    workers: int
    env: tuple[tuple[str, str], ...]


def layouts(plan: Plan) -> list[Layout]:
    cores = str(plan.cores)
    found = [
        Layout(f"default: 1 worker, {cores} CPUs (one segment per CPU, tcmalloc)", 1, (("DEMUCS_THREADS", cores),)),
        Layout(f"1 worker x {cores} Torch threads, malloc (as bare Demucs)", 1,
               (("DEMUCS_THREADS", cores), ("DEMUCS_JOBS", "1"), ("DEMUCS_MALLOC", "system"))),
    ]
    if plan.b5_reps > 1 and plan.cores > 1:  # full mode
        found.append(Layout(f"{cores} workers x 1 CPU (tcmalloc)", plan.cores, (("DEMUCS_THREADS", "1"),)))
    return found


def run(plan: Plan, scratch: Path) -> list[Section]:
    clip = songs.song(plan.b5_seconds).read_bytes()
    chosen = layouts(plan)
    elapsed: dict[Layout, list[float]] = {layout: [] for layout in chosen}
    for rep in range(plan.b5_reps):
        for number, layout in enumerate(chosen if rep % 2 == 0 else chosen[::-1]):
            batch = [songs.variant(clip, f"b5-{rep}-{number}-{index}") for index in range(plan.b5_songs)]
            took = _batch(plan, scratch / f"b5-{rep}-{number}", layout, batch)
            elapsed[layout].append(took)
            print(f"B5 run {rep + 1}/{plan.b5_reps}, {layout.name}: {len(batch)} songs in {seconds(took)}, "
                  f"{len(batch) / took * 3600:.0f} songs/h", flush=True)
    return [_section(plan, elapsed)]


def _batch(plan: Plan, folder: Path, layout: Layout, batch: list[bytes]) -> float:
    """Seconds from the first POST to the last song's tracks stored, on a fresh stack."""
    env = {**plan.worker_env(plan.cores), **dict(layout.env)}
    with Callbacks() as callbacks, Stack(folder, plan.model, layout.workers, env) as stack:
        requests_ = [upload(mp3, callbacks=callbacks) for mp3 in batch]
        started = time.perf_counter()
        for request in requests_:
            stack.submit(request)
        finished = max(stack.wait_done(callbacks, request.songhash, 4 * 3600) for request in requests_)
    return finished - started


def _section(plan: Plan, elapsed: dict[Layout, list[float]]) -> Section:
    rows, rates = [], {}
    for layout, runs in elapsed.items():
        rates[layout] = plan.b5_songs / statistics.median(runs) * 3600
        rows.append([layout.name, ", ".join(seconds(run) for run in runs), f"{rates[layout]:.1f}",
                     f"{rates[layout] / plan.cores:.1f}"])
    default, *others = rates
    checks = [Check(f"{layout.name}", f"{rate:.1f} songs/h") for layout, rate in rates.items()]
    checks += [Check(f"default / {layout.name}", f"{rates[default] / rates[layout]:.2f}") for layout in others]
    return Section(
        TITLE,
        [
            f"{plan.b5_songs} distinct songs of {plan.b5_seconds:g} s submitted at once to a fresh stack; the time is "
            f"from the first POST to the last song's callback (its tracks stored); {plan.b5_reps} run(s) per layout, "
            f"alternating. Every layout uses the same {plan.cores} CPUs."
        ],
        [("Layouts:", Table(["layout", "batch times", "songs/h (median)", "songs/h per core"], rows))],
        checks,
    )
