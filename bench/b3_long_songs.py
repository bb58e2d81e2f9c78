"""B3 long songs: the worker's peak memory (its whole process tree) as songs get longer, versus bare Demucs
on the same files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench import songs
from bench.bare import BareRun, run_bare
from bench.config import Plan
from bench.report import Check, Section, Table, mib, seconds
from bench.stack import Callbacks, Stack, StackRun

TITLE = "B3 long songs: peak memory of the worker versus bare Demucs"
TARGET_RATIO = 1.2  # the longest song's worker peak over the shortest's


@dataclass(frozen=True)
class Length:
    seconds: float
    worker: StackRun
    bare: BareRun | None  # None: longer than the plan runs bare Demucs on


def run(plan: Plan, scratch: Path) -> list[Section]:
    lengths: list[Length] = []
    with Callbacks() as callbacks, Stack(scratch / "b3", plan.model, worker_env=plan.worker_env(plan.cores)) as stack:
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
    rows = [
        [
            _minutes(length.seconds),
            mib(length.worker.worker_peak_rss),
            mib(length.bare.peak_rss) if length.bare else "not run",
            seconds(length.worker.seconds),
            seconds(length.bare.seconds) if length.bare else "not run",
        ]
        for length in lengths
    ]
    shortest = min(lengths, key=lambda length: length.seconds)
    longest = max(lengths, key=lambda length: length.seconds)
    worker_ratio = longest.worker.worker_peak_rss / shortest.worker.worker_peak_rss
    span = f"{_minutes(longest.seconds)} / {_minutes(shortest.seconds)}"
    bare = [length for length in lengths if length.bare]
    bare_span = f"{_minutes(bare[-1].seconds)} / {_minutes(bare[0].seconds)}"
    bare_ratio = bare[-1].bare.peak_rss / bare[0].bare.peak_rss
    chunking = ", ".join(
        f"{name}={value:g}" if value is not None else f"{name} unset (the worker's default)"
        for name, value in (
            ("CHUNK_SECONDS", plan.chunk_seconds),
            ("CHUNK_OVERLAP_SECONDS", plan.chunk_overlap_seconds),
        )
    )
    return Section(
        TITLE,
        [
            "The rondo tiled to each length (128 kbps MP3), one run per length on each side, alternating which goes "
            "first. Peak RSS summed over the process tree, polled every 0.1 s: the worker and its Demucs subprocess "
            "(so it includes the idle worker's own memory), and the bare `demucs.separate` process. "
            f"Worker: {chunking}; {plan.cores} Torch threads on both sides."
        ],
        [("Per length:", Table(["song", "worker peak RSS", "bare peak RSS", "worker wall", "bare wall"], rows))],
        [
            Check(f"worker peak RSS, {span}", f"{worker_ratio:.2f}", f"≤ {TARGET_RATIO}", worker_ratio <= TARGET_RATIO),
            Check(f"bare Demucs peak RSS, {bare_span}", f"{bare_ratio:.2f}"),
        ],
    )


def _minutes(length: float) -> str:
    return f"{length / 60:g} min" if length >= 60 else f"{length:g} s"
