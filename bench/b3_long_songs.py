"""B3 long songs: the worker's peak memory (its whole process tree) and its time per minute of audio as songs get
longer, under a memory budget (MEMORY_BUDGET_MIB), versus bare Demucs on the same files where it runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench import songs
from bench.bare import BareRun, run_bare
from bench.config import Plan
from bench.report import Check, Section, Table, mib, seconds
from bench.stack import Callbacks, Stack, StackRun

TITLE = "B3 long songs: the worker's time per minute and peak memory under a budget"
TARGET_TIME = 1.05  # the longest song's time per minute of audio over the shortest's


@dataclass(frozen=True)
class Length:
    seconds: float
    worker: StackRun
    bare: BareRun | None  # None: longer than the plan runs bare Demucs on


def run(plan: Plan, scratch: Path) -> list[Section]:
    lengths: list[Length] = []
    env = plan.worker_env(plan.cores, MEMORY_BUDGET_MIB=str(plan.b3_budget_mib))
    with Callbacks() as callbacks, Stack(scratch / "b3", plan.model, worker_env=env) as stack:
        for index, length in enumerate(plan.b3_seconds):
            song = songs.song(length)
            bare = None
            # Alternate which side goes first, as in B1.
            if index % 2 == 0 and length <= plan.b3_bare_max_seconds:
                bare = run_bare(song, plan.model, plan.cores, scratch)
            worker = stack.separate(callbacks, song.read_bytes())
            if index % 2 == 1 and length <= plan.b3_bare_max_seconds:
                bare = run_bare(song, plan.model, plan.cores, scratch)
            lengths.append(Length(length, worker, bare))
            print(
                f"B3 {_minutes(length)}: worker peak {mib(worker.worker_peak_rss)} in {seconds(worker.seconds)}, "
                + (f"bare peak {mib(bare.peak_rss)} in {seconds(bare.seconds)}" if bare else "bare not run"),
                flush=True,
            )
    return [_section(plan, lengths)]


def _section(plan: Plan, lengths: list[Length]) -> Section:
    budget = plan.b3_budget_mib * 2**20
    rows = [
        [
            _minutes(length.seconds),
            mib(length.worker.worker_peak_rss),
            seconds(length.worker.seconds),
            seconds(length.worker.seconds / length.seconds * 60),
            mib(length.bare.peak_rss) if length.bare else "not run",
            seconds(length.bare.seconds) if length.bare else "not run",
        ]
        for length in lengths
    ]
    shortest = min(lengths, key=lambda length: length.seconds)
    longest = max(lengths, key=lambda length: length.seconds)
    per_minute = (longest.worker.seconds / longest.seconds) / (shortest.worker.seconds / shortest.seconds)
    peak = max(length.worker.worker_peak_rss for length in lengths)
    return Section(
        TITLE,
        [
            "The rondo tiled to each length (128 kbps MP3), one run per length, through the service (POST to the "
            "last track stored). Peak RSS summed over the process tree, polled every 0.1 s: the worker and its "
            "Demucs subprocesses (so it includes the idle worker's own memory), and the bare `demucs.separate` "
            f"process. Worker: MEMORY_BUDGET_MIB={plan.b3_budget_mib}, DEMUCS_THREADS={plan.cores}, the rest its "
            "defaults: a song that fits the budget goes whole, a longer one in the longest chunks that fit."
        ],
        [("Per length:", Table(["song", "worker peak RSS", "worker wall", "per minute of audio", "bare peak RSS",
                                "bare wall"], rows))],
        [
            Check(f"time per minute, {_minutes(longest.seconds)} / {_minutes(shortest.seconds)}", f"{per_minute:.3f}",
                  f"≤ {TARGET_TIME}", per_minute <= TARGET_TIME),
            Check("worker peak RSS, every length (flat: bounded by the budget, not the song)", mib(peak),
                  f"≤ the budget, {mib(budget)}", peak <= budget),
        ],
    )


def _minutes(length: float) -> str:
    return f"{length / 60:g} min" if length >= 60 else f"{length:g} s"
