"""LAYOUTS and FOOTPRINT: the measurements behind the worker's layout (worker/separation.py).

LAYOUTS: one song separated by `demucs.separate` laid out in each way the worker could lay it out on the same
CPUs: Torch's threads (bare Demucs), one segment per CPU with one thread each (`-j`), separate processes on parts of
the song, each with the system's malloc and with tcmalloc. FOOTPRINT: the peak memory of one process as the worker
runs it, by song length and segments at once, against the figures the worker plans with (msaas/models.py)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import songs
from bench.config import Model, Plan, child_env
from bench.measure import PeakRss
from bench.report import Check, Section, Table, mib, seconds
from msaas.models import footprint_of
from worker.demucs_run import tcmalloc

SHARED_SECONDS = 7.8  # htdemucs' segment: what two parts of a song must share at least (worker/chunks.py)


@dataclass(frozen=True)
class Variant:
    name: str
    processes: int  # each separates 1/processes of the song plus one shared segment
    jobs: int
    threads: int
    malloc: str  # "system" or "tcmalloc"
    output: str  # "mp3": Demucs encodes; "float32": float WAVs, which the worker encodes


def _run(model: Model, variant: Variant, song_seconds: float, scratch: Path) -> tuple[float, int]:
    """Wall seconds from start to the last process's exit, and the peak RSS summed over the processes."""
    length = song_seconds if variant.processes == 1 else song_seconds / variant.processes + SHARED_SECONDS
    song = songs.song(length)
    env = child_env(OMP_NUM_THREADS=str(variant.threads), MKL_NUM_THREADS=str(variant.threads))
    if variant.malloc == "tcmalloc":
        env["LD_PRELOAD"] = tcmalloc() or _missing()
    output = ["--mp3"] if variant.output == "mp3" else ["--float32"]
    with tempfile.TemporaryDirectory(dir=scratch, prefix="layout-") as out:
        command = [sys.executable, "-m", "demucs.separate", *output, *model.flags(), "-o", out, "-d", "cpu",
                   *(["-j", str(variant.jobs)] if variant.jobs > 1 else []), str(song)]
        started = time.perf_counter()
        processes = [subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, env=env) for _ in range(variant.processes)]
        peaks = []
        for process in processes:
            with PeakRss(process.pid) as memory:
                _, said = process.communicate()
            if process.returncode:
                raise RuntimeError(f"demucs.separate failed: {said.decode(errors='replace')[-2000:]}")
            peaks.append(memory.peak)
        took = time.perf_counter() - started
    return took, sum(peaks)


def _missing() -> str:
    raise RuntimeError("libtcmalloc_minimal is not installed (apt-get install libtcmalloc-minimal4)")


def layouts(plan: Plan, scratch: Path) -> list[Section]:
    cores = plan.cores
    variants = [
        Variant(f"bare: 1 process x {cores} Torch threads, malloc (the comparison)", 1, 1, cores, "system", "mp3"),
        Variant(f"1 process x {cores} Torch threads, tcmalloc", 1, 1, cores, "tcmalloc", "float32"),
        Variant(f"1 process, {cores} segments at once x 1 thread, malloc", 1, cores, 1, "system", "float32"),
        Variant(f"1 process, {cores} segments at once x 1 thread, tcmalloc (the worker)", 1, cores, 1, "tcmalloc",
                "float32"),
        Variant(f"{cores} processes x 1 thread on parts of the song, tcmalloc", cores, 1, 1, "tcmalloc", "float32"),
    ]
    rows, times = [], {}
    for variant in variants:
        took, peak = _run(plan.model, variant, plan.layout_seconds, scratch)
        times[variant] = took
        print(f"LAYOUTS {variant.name}: {seconds(took)}, peak {mib(peak)}", flush=True)
        rows.append([variant.name, variant.output, seconds(took), f"{took / times[variants[0]]:.2f}", mib(peak)])
    worker = times[variants[3]] / times[variants[0]]
    return [Section(
        "LAYOUTS: one song on the same CPUs, laid out each way the worker could",
        [f"A {plan.layout_seconds:g} s song (the rondo tiled, 128 kbps); one run each, in the table's order. "
         "Float32 rows leave the MP3 encoding to the worker (in parallel, one track per CPU); the bare row "
         "encodes four MP3s itself, one after the other. Parts: each process separates "
         f"1/{cores} of the song plus the {SHARED_SECONDS} s segment it shares with its neighbour, as chunks do."],
        [("Layouts:", Table(["layout", "stems", "wall", "of bare", "peak RSS (all processes)"], rows))],
        [Check("the worker's layout, of bare Demucs' time", f"{worker:.2f}")],
    )]


def footprint(plan: Plan, scratch: Path) -> list[Section]:
    """Peak RSS of one Demucs process as the worker runs it, against what the worker plans with."""
    predicted = footprint_of(plan.model.name)
    rows, under = [], []
    for length in plan.footprint_seconds:
        for jobs in sorted({1, plan.cores}):
            variant = Variant("worker", 1, jobs, max(1, plan.cores // jobs), "tcmalloc", "float32")
            took, peak = _run(plan.model, variant, length, scratch)
            expected = predicted.mib(length, jobs)
            under.append(peak / 2**20 <= expected)
            print(f"FOOTPRINT {length:g} s, {jobs} at once: {mib(peak)} (planned {expected:.0f} MiB)", flush=True)
            rows.append([f"{length:g} s", str(jobs), mib(peak), f"{expected:.0f} MiB", seconds(took)])
    return [Section(
        "FOOTPRINT: peak memory of one Demucs process as the worker runs it",
        [f"`demucs.separate --float32 -j N`, tcmalloc, one Torch thread per segment ({plan.cores} CPUs in all "
         "when N is 1); the song tiled to each length. 'Planned' is what the worker assumes when it lays a song "
         f"out (msaas/models.py: {predicted}); it must not be below what was measured, or a song planned to fit "
         "its budget could be OOM-killed."],
        [("Runs:", Table(["song", "segments at once", "peak RSS", "planned", "wall"], rows))],
        [Check("runs at or below the planned figure", f"{sum(under)} of {len(under)}", "all",
               all(under))],
    )]

