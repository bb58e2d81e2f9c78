"""A song's separation: how long it may take, how it is laid out on the worker's CPUs and memory, the Demucs
runs, and the tracks' encoding.

The layout (`layout`) follows from measurements (bench/RESULTS.md): on the CPU one Demucs process running one
segment per CPU with one Torch thread each (`-j`) is faster than Torch's own threads, and as fast as separate
processes on parts of the song, without their seams; so a song that fits the memory budget goes whole, in one
process. One that does not is cut in the longest chunks that fit (worker/chunks.py), one process each, in turn,
and joined. Demucs writes float WAVs, and the worker encodes the tracks in parallel (Demucs encodes them one by
one). Each run is worker/demucs_run.py's.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from msaas import models
from msaas.deadline import Deadline
from msaas.errors import ConfigError
from msaas.settings import Settings
from worker import chunks, resources
from worker.demucs_run import (
    DemucsConfig,
    DemucsRun,
    SeparationFailed,
    check_space,
    last_line,
    run,
    tail,
)

log = logging.getLogger(__name__)
BUDGET_SHARE = 0.8  # of the container's memory, when MEMORY_BUDGET_MIB is not set
WORKER_MIB = 64  # the worker's own growth while it joins and encodes, on top of what it holds at the start
MIN_CHUNK_SECONDS = 30.0  # shorter chunks would spend more on their shared segments than on their own audio
# Longer songs go in chunks whatever the budget: the footprint was measured up to here, and past it both memory and
# time per minute grow faster than the song (bench/RESULTS.md, FOOTPRINT).
MAX_CHUNK_SECONDS = 600.0


@dataclass(frozen=True)
class SeparationConfig:
    """The settings a separation needs, taken once from `Settings` (and the worker's container)."""

    demucs: DemucsConfig = DemucsConfig()
    cpus: int = 1
    jobs: int = 0  # segments at once; 0: one per CPU, fewer when memory is short
    memory_budget_mib: float = 4096.0
    chunk_seconds: float = 0.0  # at most this long a chunk; 0: as long as the budget allows
    chunk_overlap_seconds: float = 5.0
    timeout_min: float = 120.0
    timeout_factor: float = 10.0

    @classmethod
    def of(cls, settings: Settings) -> SeparationConfig:
        for name in ("memory_budget_mib", "chunk_seconds", "demucs_threads", "demucs_jobs"):
            if getattr(settings, name) < 0:
                raise ConfigError(f"{name.upper()} must not be negative")
        budget = settings.memory_budget_mib or BUDGET_SHARE * resources.memory_limit() / 2**20
        return cls(DemucsConfig.of(settings), separation_cpus(settings.demucs_threads, os.environ),
                   settings.demucs_jobs, budget, settings.chunk_seconds, settings.chunk_overlap_seconds,
                   settings.demucs_timeout_min, settings.demucs_timeout_factor)


def separation_cpus(threads: int, env: Mapping[str, str], cgroup: Path = resources.CGROUP) -> int:
    """The CPUs one separation uses: `DEMUCS_THREADS` if set; else `OMP_NUM_THREADS` if set (the manifests set it
    to the pod's CPU limit); else the CPUs this process may use (`resources.cpus`)."""
    if threads > 0:
        return threads
    if env.get("OMP_NUM_THREADS", "").isdigit() and int(env["OMP_NUM_THREADS"]) > 0:
        return int(env["OMP_NUM_THREADS"])
    return resources.cpus(cgroup)


@dataclass(frozen=True)
class Layout:
    """How one song is separated: whole (`chunk_seconds` 0) or in chunks of about `chunk_seconds`, by one Demucs
    process at a time, each separating `jobs` segments at once with `threads` Torch threads each."""

    chunk_seconds: float
    jobs: int
    threads: int
    peak_mib: float  # what one Demucs process is expected to peak at
    budget_mib: float  # what it may use: the budget less what the worker holds

    def describe(self) -> str:
        how = f"in chunks of about {self.chunk_seconds:.0f} s" if self.chunk_seconds else "whole"
        return (f"{how}, {self.jobs} segment(s) at once x {self.threads} thread(s), about {self.peak_mib:.0f} MiB "
                f"of {self.budget_mib:.0f} MiB")


def layout(seconds: float, model: str, config: SeparationConfig, worker_mib: float | None = None) -> Layout:
    """The fastest layout that fits the memory budget, for a song of `seconds` (see the module's doc).

    One segment per CPU when memory allows, fewer when a song would otherwise be cut in chunks shorter than
    `MIN_CHUNK_SECONDS`; whole when the song fits, else the longest chunks that fit (at most `CHUNK_SECONDS` and
    `MAX_CHUNK_SECONDS`)."""
    footprint = models.footprint_of(model)
    held = (resources.own_rss() / 2**20 if worker_mib is None else worker_mib) + WORKER_MIB
    budget = config.memory_budget_mib - held
    # Demucs runs segments side by side on the CPU only (on a GPU one at a time, whatever it is told), and only
    # models without an LSTM may (msaas/models.py); the others get every thread for one segment, as bare Demucs.
    at_once = config.demucs.device == "cpu" and models.parallel(model)
    jobs = min(config.jobs or config.cpus, config.cpus) if at_once else 1
    while jobs > 1 and footprint.longest(budget, jobs) < min(seconds, MIN_CHUNK_SECONDS):
        jobs -= 1
    longest = min(max(footprint.longest(budget, jobs), MIN_CHUNK_SECONDS), MAX_CHUNK_SECONDS)
    if config.chunk_seconds:
        longest = min(longest, config.chunk_seconds)
    chunk_seconds = 0.0 if seconds <= longest else longest
    threads = max(1, config.cpus // jobs)
    return Layout(chunk_seconds, jobs, threads, footprint.mib(chunk_seconds or seconds, jobs), budget)


def separate(
    song: DemucsRun,
    tracks: tuple[str, ...],
    config: SeparationConfig,
    log_path: Path,
    seconds: float,
    abandon: Callable[[], bool] = lambda: False,
    report: Callable[[float], None] = lambda percent: None,
) -> dict[str, Path]:
    """Run Demucs on a song of `seconds` (measured where its job was accepted) and return each track's file;
    raise SeparationFailed with the reason otherwise.

    The song is laid out by `layout`: whole, or in chunks joined afterwards (worker/chunks.py); either way
    Demucs writes float WAVs and the tracks are encoded here, in parallel. Past its time limit, or when
    `abandon()` turns true, the whole process group is killed. `report` hears the progress percentage about once
    a second.
    """
    limit = config.timeout_min + config.timeout_factor * seconds
    deadline = Deadline(limit, "demucs")
    plan = layout(seconds, song.model, config)
    song = replace(song, jobs=plan.jobs, threads=plan.threads)
    grid: list[chunks.Chunk] = []
    if len(chunk_plan(song, config, plan, round(seconds * chunks.SAMPLE_RATE))) > 1:
        song, grid = cut(song, config, plan, seconds)
    log.info("%s: %.0f s, separating %s", song.input_path.name, seconds, plan.describe())
    if plan.peak_mib > plan.budget_mib:
        log.warning("MEMORY_BUDGET_MIB (%.0f MiB) is below what the smallest layout needs (about %.0f MiB for %.0f s "
                    "chunks): separating anyway, and Demucs may be killed for memory", config.memory_budget_mib,
                    plan.peak_mib, MIN_CHUNK_SECONDS)
    # One Demucs process per chunk. A single run over all chunks would load the model once, but Demucs' CLI
    # keeps one track's stems while it separates the next, so its peak would be that of two chunks.
    parts = [replace(song, chunks=(path,)) for path in song.chunks] or [song]
    for done, part in enumerate(parts):
        run(part, config.demucs, log_path, deadline, abandon,
            lambda percent, done=done: report((done * 100 + percent) / len(parts)))
    sources = song.chunks or (song.input_path,)
    missing = [track for track in tracks for source in sources
               if not (path := song.track_path(track, source)).is_file() or path.stat().st_size == 0]
    if missing:
        raise SeparationFailed(
            f"demucs exited 0 but produced no {', '.join(sorted(set(missing)))} track(s): "
            f"{last_line(tail(log_path)) or 'no output'}"
        )
    if not song.chunks:  # one stem file each, which Demucs has rescaled already
        stems = {track: [song.track_path(track)] for track in tracks}
        grid, level = [chunks.Chunk(0, len(chunks.read_wav(stems[tracks[0]][0])))], 1.0
    else:
        stems = {track: [song.track_path(track, source) for source in song.chunks] for track in tracks}
        level = chunks.LEVEL
    joined = song.out_dir / "joined"
    joined.mkdir()
    outputs = {track: joined / f"{track}.{song.options.format}" for track in tracks}

    def encode(track: str) -> None:
        chunks.join(stems[track], grid, outputs[track], song.options.format, song.options.mp3_bitrate, level,
                    rescale=bool(song.chunks))

    # One track per CPU at a time: lameenc and numpy let go of the GIL while they work.
    with ThreadPoolExecutor(max(1, min(config.cpus, len(tracks)))) as pool:
        list(pool.map(encode, tracks))  # raises what an encoding raised
    return outputs


def cut(run: DemucsRun, config: SeparationConfig, plan: Layout,
        seconds: float) -> tuple[DemucsRun, list[chunks.Chunk]]:
    """Decode the song (no further than its measured length) and write its chunks for Demucs; the run that
    separates them, and the chunks."""
    folder = run.out_dir.parent / "chunks"
    folder.mkdir(parents=True)
    raw = folder / "song.f32"
    try:
        frames = chunks.decode(run.input_path, raw, seconds)
    except subprocess.CalledProcessError as error:
        said = error.stderr.decode(errors="replace")
        check_space(said, raw)
        raise SeparationFailed(f"the input does not decode as audio: {last_line(said)}") from None
    grid = chunk_plan(run, config, plan, frames)
    paths = chunks.write_inputs(raw, grid, folder)
    raw.unlink()  # the chunks hold it all now; disk is scarce in a pod
    log.info("%s: %.0f s of audio, separating in %d chunks", run.input_path.name, frames / chunks.SAMPLE_RATE,
             len(grid))
    return replace(run, chunks=tuple(paths)), grid


def chunk_plan(run: DemucsRun, config: SeparationConfig, plan: Layout, frames: int) -> list[chunks.Chunk]:
    rate = chunks.SAMPLE_RATE
    return chunks.plan(frames, int(plan.chunk_seconds * rate), int(config.chunk_overlap_seconds * rate),
                       chunks.segment_grid(run.model, config.demucs.segment, run.options.overlap))
