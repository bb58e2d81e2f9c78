"""ENGINES: what a song costs with each engine's models on the CPU: the RoFormer models (worker/roformer_run.py)
against htdemucs, random weights of their real size, on one 30 s clip, each run as the worker runs it.

A RoFormer separates a song in windows (8 s, each sharing half with the next), one after another, so its time is
its load plus the same time per window. A model too slow for the whole clip here is timed on the clip's first
`short` seconds (two whole windows) and its separation scaled to the clip's windows; the table says which."""

from __future__ import annotations

import math
import re
import resource
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import songs
from bench.config import CACHE, Plan, child_env, torch_threads_env
from bench.measure import PeakRss
from bench.report import Section, Table, mib, seconds
from devstack import random_models
from msaas.options import Options
from worker.demucs_run import DemucsConfig, DemucsRun, ffmpeg_dir, tcmalloc
from worker.roformer_run import RoformerConfig, RoformerRun
from worker.separation import SeparationConfig, layout

CLIP_SECONDS = 30.0
# The published models of the catalogue, with the clip each is timed on (None: the whole clip). BS-RoFormer took
# 18 CPU-seconds per second of audio here: the whole clip would take some 20 minutes on 2 shared cores.
MODELS = {"mel_band_roformer_viperx_1143": None, "bs_roformer_viperx_1297": 9.0}
# tqdm's bar: " 50%|#####     | 1/2 [00:10<00:10, ...]" (RoFormer: windows), "| 13.5/30.0 [" (Demucs: seconds).
BAR = re.compile(rb"(\d{1,3})%\|[^|\r\n]*\| *([\d.]+)/([\d.]+) \[")
WINDOW_SECONDS, WINDOW_STEP_SECONDS = 8.0, 4.0  # the models' windows (inference.dim_t x hop) and their overlap 2


@dataclass(frozen=True)
class Timed:
    wall: float  # process start to exit
    loaded: float  # to the first progress bar: interpreter, imports, model load, decoding
    separated: float  # to the bar's last 100%
    cpu: float  # CPU seconds, all threads
    peak_rss: int
    windows: int  # the bar's total: windows (RoFormer), seconds (Demucs)


def run(plan: Plan, scratch: Path) -> list[Section]:
    folder = random_models.write_roformer(CACHE / "roformer", real=True)
    clip = songs.song(CLIP_SECONDS)
    rows = []
    with tempfile.TemporaryDirectory(dir=scratch, prefix="engines-") as out:
        demucs = _demucs(plan, clip, Path(out))
        rows.append(_row(plan.model.name, "demucs", clip.name, demucs, CLIP_SECONDS, demucs.separated))
        for name, short in MODELS.items():
            song = songs.song(short) if short else clip
            timed = _roformer(plan, name, folder, song, Path(out))
            separating = (timed.separated - timed.loaded) * _windows(CLIP_SECONDS) / timed.windows
            rows.append(_row(name, "roformer", song.name, timed, short or CLIP_SECONDS, timed.loaded + separating))
    return [Section(
        "ENGINES: RoFormer models against htdemucs, CPU",
        [f"One run per model ({plan.cores} CPUs, other work sharing them: see the note below), random weights of the "
         f"real size (`devstack/random_models.py`), the rondo tiled to {CLIP_SECONDS:g} s. Each runs as the worker "
         "runs it: Demucs with the worker's flags and layout (segments at once x threads), a RoFormer through "
         "`python -m worker.roformer_run` with every CPU's thread; both with tcmalloc where installed. `seconds per "
         "second` is the whole run's wall time for the 30 s clip over 30; for a model timed on a shorter clip its "
         "separation is scaled by windows (30 s: "
         f"{_windows(CLIP_SECONDS)} windows) and its load kept. Peak RSS: the process, on the clip it ran."],
        [("Per model:", Table(
            ["model", "engine", "ran on", "load", "separating (ran)", "windows", "30 s clip, wall", "s per s",
             "CPU s per s", "peak RSS"], rows))],
    )]


def _row(model: str, engine: str, ran_on: str, timed: Timed, ran_seconds: float, clip_wall: float) -> list[str]:
    print(f"ENGINES {model}: {clip_wall / CLIP_SECONDS:.2f} s per s, peak {mib(timed.peak_rss)}", flush=True)
    return [model, engine, ran_on, seconds(timed.loaded), seconds(timed.separated - timed.loaded),
            str(timed.windows) if engine == "roformer" else "",
            seconds(clip_wall), f"{clip_wall / CLIP_SECONDS:.2f}", f"{timed.cpu / ran_seconds:.1f}",
            mib(timed.peak_rss)]


def _windows(seconds_: float) -> int:
    """How many windows a RoFormer runs over a song (audio-separator's schedule: the last one ends at the end)."""
    if seconds_ <= WINDOW_SECONDS:
        return 1
    return math.ceil((seconds_ - WINDOW_SECONDS) / WINDOW_STEP_SECONDS) + 1


def _demucs(plan: Plan, song: Path, out: Path) -> Timed:
    config = SeparationConfig(DemucsConfig(repo=plan.model.repo), cpus=plan.cores)
    laid = layout(CLIP_SECONDS, plan.model.name, config)
    demucs = DemucsRun(plan.model.name, song, out / "demucs", Options.resolve({"format": "wav"}, plan.model.name),
                       jobs=laid.jobs, threads=laid.threads)
    return _timed(demucs.command(config.demucs), laid.threads)


def _roformer(plan: Plan, model: str, folder: Path, song: Path, out: Path) -> Timed:
    roformer = RoformerRun(model, song, out / model, Options.resolve({"format": "wav"}, plan.model.name),
                           threads=plan.cores)
    return _timed(roformer.command(RoformerConfig(folder)), plan.cores)


def _timed(command: list[str], threads: int) -> Timed:
    env = child_env(**torch_threads_env(threads), PATH=f"{ffmpeg_dir()}:{child_env()['PATH']}",
                    **({"LD_PRELOAD": library} if (library := tcmalloc()) else {}))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=env)
    loaded = separated = None
    windows = 0
    tail = b""
    with PeakRss(process.pid) as memory:
        while chunk := process.stdout.read1(65536):
            now = time.perf_counter()
            tail = (tail + chunk)[-4000:]
            for bar in BAR.finditer(tail):
                if bar.end() <= len(tail) - len(chunk):
                    continue  # a bar already read (a bar may straddle two reads, so the tail is searched whole)
                loaded = loaded or now
                windows = max(windows, int(float(bar[3])))
                if bar[1] == b"100":
                    separated = now
        process.wait()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0 or loaded is None or separated is None:
        raise RuntimeError(f"{command[2]} exited {process.returncode}:\n{tail.decode(errors='replace')}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return Timed(wall, loaded - started, separated - started, cpu, memory.peak, windows)
