"""B1 songs of ordinary length: each song through the whole service (POST until the fourth track downloads)
versus bare `demucs.separate` with the same model on the same file and CPUs, alternating: a short clip, a minute,
and the 2 to 5 minute songs most music is. Model loading: the share of a run spent starting the interpreter and
loading the model, read from the bare runs' output as it arrives."""

from __future__ import annotations

import statistics
from pathlib import Path

from bench import songs
from bench.bare import BareRun, run_bare
from bench.config import Plan
from bench.report import Check, Section, Table, mib, seconds
from bench.stack import Callbacks, Stack, StackRun

TITLE = "B1 songs of ordinary length: POST to the 4th track downloadable, versus bare Demucs"
# The issue's targets, by song length: the service's median over bare Demucs' median (None: report only).
TARGETS = {10: None, 60: 0.95, 150: 0.85, 240: 0.85}
WARM_UP_SECONDS = 2  # one short song through the stack first: the first request pays for lazy imports


def run(plan: Plan, scratch: Path) -> list[Section]:
    lengths = [plan.b1_song] if plan.b1_song else [songs.song(length) for length in plan.b1_seconds]
    bare_runs: dict[Path, list[BareRun]] = {song: [] for song in lengths}
    stack_runs: dict[Path, list[StackRun]] = {song: [] for song in lengths}
    with Callbacks() as callbacks, Stack(scratch / "b1", plan.model, worker_env=plan.worker_env(plan.cores)) as stack:
        stack.separate(callbacks, songs.song(WARM_UP_SECONDS).read_bytes())
        turn = 0
        for rep in range(plan.reps):
            for song in lengths:
                mp3 = songs.variant(song.read_bytes(), f"b1-{rep}")  # a new songhash: never a repeat
                # Each side goes first in turn, so neither always meets the colder caches or the busier machine.
                for side in ("bare", "stack") if turn % 2 == 0 else ("stack", "bare"):
                    if side == "bare":
                        bare_runs[song].append(run_bare(song, plan.model, plan.cores, scratch))
                    else:
                        stack_runs[song].append(stack.separate(callbacks, mp3))
                turn += 1
                print(
                    f"B1 {song.name} run {rep + 1}/{plan.reps}: bare {seconds(bare_runs[song][-1].seconds)}, "
                    f"through the service {seconds(stack_runs[song][-1].seconds)} "
                    f"({stack_runs[song][-1].seconds / bare_runs[song][-1].seconds:.2f})",
                    flush=True,
                )
    setup = (
        f"Songs: the rondo tiled to each length (128 kbps MP3). Both sides on the same {plan.cores} CPUs, "
        f"Demucs' default segment, overlap and shifts. Bare: `demucs.separate --mp3` as the README runs it, "
        f"{plan.cores} Torch threads (OMP_NUM_THREADS), the system's malloc. Service: the worker's defaults "
        f"(DEMUCS_THREADS={plan.cores}: its layout, worker/separation.py). {plan.reps} run(s) per side and length, "
        "alternating which side goes first, after one warm-up song through the service."
    )
    return [_ratios(setup, bare_runs, stack_runs), _loading(bare_runs)]


def _ratios(setup: str, bare_runs: dict[Path, list[BareRun]], stack_runs: dict[Path, list[StackRun]]) -> Section:
    rows, checks = [], []
    for song, bares in bare_runs.items():
        stacks = stack_runs[song]
        for index, (bare, stack) in enumerate(zip(bares, stacks, strict=True), start=1):
            rows.append([song.name, str(index), seconds(bare.seconds), seconds(stack.seconds),
                         f"{stack.seconds / bare.seconds:.3f}", mib(bare.peak_rss), mib(stack.worker_peak_rss)])
        ratio = statistics.median(run.seconds for run in stacks) / statistics.median(run.seconds for run in bares)
        length = round(songs.seconds_of(song))
        target = TARGETS.get(length)
        checks.append(Check(
            f"{song.name}: median service / median bare ({seconds(statistics.median(r.seconds for r in stacks))} / "
            f"{seconds(statistics.median(r.seconds for r in bares))})",
            f"{ratio:.3f}", f"≤ {target}" if target else "report", ratio <= target if target else None,
        ))
    return Section(
        TITLE,
        [
            setup,
            "Bare: process start to exit. Service: POST /apiv1/separate until the worker's callback, then "
            "all four tracks answer 200 on /apiv1/track (the callback ends the wait, so no polling takes CPU "
            "from the separation).",
        ],
        [("Runs:", Table(["song", "run", "bare", "through the service", "ratio", "bare peak RSS",
                          "worker peak RSS"], rows))],
        checks,
    )


def _loading(bare_runs: dict[Path, list[BareRun]]) -> Section:
    rows, checks = [], []
    for song, runs in bare_runs.items():
        rows += [[song.name, seconds(run.loaded), seconds(run.separated - run.loaded),
                  seconds(run.seconds - run.separated), seconds(run.seconds)] for run in runs]
        loaded = statistics.median(run.loaded for run in runs)
        total = statistics.median(run.seconds for run in runs)
        encoding = statistics.median(run.seconds - run.separated for run in runs)
        checks.append(Check(f"{song.name}: start + model load / writing the stems, of bare Demucs",
                            f"{loaded / total:.1%} / {encoding / total:.1%}"))
    return Section(
        "Model loading and writing the stems, as shares of bare Demucs",
        [
            'From each bare run of B1, timed by its output as it arrives: start to "Separating track" (interpreter, '
            "imports, model load), to the progress bar's last 100% (reading and separating the audio), to exit "
            "(encoding and writing four MP3s, one after the other). The worker pays the first part once per Demucs "
            "process and encodes the four tracks in parallel."
        ],
        [("Bare runs:", Table(["song", "start + model load", "read + separate", "write stems", "total"], rows))],
        checks,
    )
