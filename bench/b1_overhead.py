"""B1 overhead: one song through the whole service (POST until the last track downloads) versus bare
`demucs.separate` with the same model, segment and threads on the same file, alternating. Model loading: the
share of a run spent starting the interpreter and loading the model, read from the bare runs' output as it
arrives."""

from __future__ import annotations

import statistics
from pathlib import Path

import sphn

from bench import songs
from bench.bare import BareRun, run_bare
from bench.config import Plan
from bench.report import Check, Section, Table, mib, seconds
from bench.stack import Callbacks, Stack, StackRun

TITLE = "B1 overhead: POST to the 4th track downloadable, versus bare Demucs"
TARGET_RATIO = 1.02
WARM_UP_SECONDS = 2  # one short song through the stack first: the first request pays for lazy imports


def run(plan: Plan, scratch: Path) -> list[Section]:
    song = plan.b1_song or songs.song(plan.clip_seconds)
    mp3 = song.read_bytes()
    bare_runs: list[BareRun] = []
    stack_runs: list[StackRun] = []
    with Callbacks() as callbacks, Stack(scratch / "b1", plan.model, worker_env=plan.worker_env(plan.cores)) as stack:
        stack.separate(callbacks, songs.song(WARM_UP_SECONDS).read_bytes())
        for rep in range(plan.reps):
            # Each side goes first in turn, so neither always meets the colder caches or the busier machine.
            for side in ("bare", "stack") if rep % 2 == 0 else ("stack", "bare"):
                if side == "bare":
                    bare_runs.append(run_bare(song, plan.model, plan.cores, scratch))
                else:
                    stack_runs.append(stack.separate(callbacks, mp3))
            print(
                f"B1 run {rep + 1}/{plan.reps}: bare {seconds(bare_runs[-1].seconds)} (model loaded after "
                f"{seconds(bare_runs[-1].loaded)}), through the service {seconds(stack_runs[-1].seconds)}",
                flush=True,
            )
    setup = (
        f"Song: `{song.name}`, {sphn.durations([str(song)])[0]:.1f} s; {plan.cores} Torch threads on both sides "
        f"(bare: OMP_NUM_THREADS, worker: DEMUCS_THREADS); Demucs' default segment and shifts on both; "
        f"{plan.reps} run(s) per side, alternating, after one warm-up song through the service."
    )
    return [_overhead(setup, bare_runs, stack_runs), _loading(bare_runs, stack_runs)]


def _overhead(setup: str, bare_runs: list[BareRun], stack_runs: list[StackRun]) -> Section:
    rows = [
        [
            str(index),
            seconds(bare.seconds),
            seconds(stack.seconds),
            f"{stack.seconds / bare.seconds:.3f}",
            mib(bare.peak_rss),
            mib(stack.worker_peak_rss),
        ]
        for index, (bare, stack) in enumerate(zip(bare_runs, stack_runs, strict=True), start=1)
    ]
    bare_median = statistics.median(run.seconds for run in bare_runs)
    stack_median = statistics.median(run.seconds for run in stack_runs)
    ratio = stack_median / bare_median
    return Section(
        TITLE,
        [
            setup,
            "Bare: process start to exit. Service: POST /apiv1/separate until the worker's callback, then "
            "all four tracks answer 200 on /apiv1/track (the callback ends the wait, so no polling takes CPU "
            "from the separation).",
        ],
        [("Runs:", Table(["run", "bare", "through the service", "ratio", "bare peak RSS", "worker peak RSS"], rows))],
        [
            Check("median bare demucs.separate", seconds(bare_median)),
            Check("median through the service", seconds(stack_median)),
            Check("ratio of the medians", f"{ratio:.3f}", f"≤ {TARGET_RATIO}", ratio <= TARGET_RATIO),
        ],
    )


def _loading(bare_runs: list[BareRun], stack_runs: list[StackRun]) -> Section:
    rows = [
        [
            str(index),
            seconds(run.loaded),
            seconds(run.separated - run.loaded),
            seconds(run.seconds - run.separated),
            seconds(run.seconds),
        ]
        for index, run in enumerate(bare_runs, start=1)
    ]
    loaded = statistics.median(run.loaded for run in bare_runs)
    bare_median = statistics.median(run.seconds for run in bare_runs)
    stack_median = statistics.median(run.seconds for run in stack_runs)
    return Section(
        "Model loading: process start and model load, as a share of B1",
        [
            'From each bare run of B1, timed by its output as it arrives: start to "Separating track" (interpreter, '
            "imports, model load), to the progress bar's last 100% (reading and separating the audio), to exit "
            "(encoding and writing four MP3s). A worker that runs `demucs.separate` per job pays the first part on "
            "every song."
        ],
        [("Bare runs:", Table(["run", "start + model load", "read + separate", "write stems", "total"], rows))],
        [
            Check("median start + model load", seconds(loaded)),
            Check("share of bare Demucs (medians)", f"{loaded / bare_median:.1%}"),
            Check("share of the service's time (medians)", f"{loaded / stack_median:.1%}"),
        ],
    )
