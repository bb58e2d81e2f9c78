"""A song's separation: how long it may take, how it is laid out on the worker's CPUs and memory, the Demucs
runs, and the tracks' encoding.

The layout (`layout`) follows from measurements (bench/RESULTS.md): on the CPU one Demucs process running one
segment per CPU with one Torch thread each (`-j`) is faster than Torch's own threads, and as fast as separate
processes on parts of the song, without their seams; so a song that fits the memory budget goes whole, in one
process. One that does not is cut in the longest chunks that fit (worker/chunks.py), one process each, in turn,
and joined. Demucs writes float WAVs, and the worker rescales and encodes the tracks in parallel (Demucs encodes
them one by one; worker/mixdown.py). Each run is worker/demucs_run.py's.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

from msaas import audio, models
from msaas.audio import SAMPLE_RATE
from msaas.deadline import Deadline
from msaas.errors import BadRequest, ConfigError
from msaas.settings import Settings
from worker import chunks, encoding, engines, mixdown, resources, wav
from worker.demucs_run import DemucsConfig, DemucsRun, SeparationFailed, last_line, run, tail
from worker.policies import TimeLimit
from worker.roformer_run import RoformerConfig

log = logging.getLogger(__name__)
BUDGET_SHARE = 0.8  # of the container's memory, when MEMORY_BUDGET_MIB is not set
WORKER_MIB = 64  # the worker's own growth while it joins and encodes, on top of what it holds at the start
MIN_CHUNK_SECONDS = 30.0  # shorter chunks would spend more on their shared segments than on their own audio
# Longer songs go in chunks whatever the budget: the footprint was measured up to here, and past it both memory and
# time per minute grow faster than the song (bench/RESULTS.md, FOOTPRINT).
MAX_CHUNK_SECONDS = 600.0
FIRST_PART_FACTOR = 4  # a range gets a short first part when it is at least this many times as long


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
    max_seconds: float = 3600.0  # the longest song decoded (MAX_SONG_SECONDS, as at the door)
    first_part_seconds: float = 0.0  # a song's first part, served before the whole; 0: none
    timeout_max: float = 0.0
    roformer: RoformerConfig = RoformerConfig(Path.home() / ".cache" / "roformer", download=True)

    @classmethod
    def of(cls, settings: Settings) -> SeparationConfig:
        for name in ("memory_budget_mib", "chunk_seconds", "demucs_threads", "demucs_jobs"):
            if getattr(settings, name) < 0:
                raise ConfigError(f"{name.upper()} must not be negative")
        budget = settings.memory_budget_mib or BUDGET_SHARE * resources.memory_limit() / 2**20
        return cls(DemucsConfig.of(settings), separation_cpus(settings.demucs_threads, os.environ),
                   settings.demucs_jobs, budget, settings.chunk_seconds, settings.chunk_overlap_seconds,
                   settings.demucs_timeout_min, settings.demucs_timeout_factor, settings.max_song_seconds,
                   settings.first_part_seconds, settings.demucs_timeout_max, RoformerConfig.of(settings))

    def time_limit(self) -> TimeLimit:
        return TimeLimit(self.timeout_min, self.timeout_factor, self.timeout_max)


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

    def describe(self, chunks: int) -> str:
        how = f"in {chunks} chunks of about {self.chunk_seconds:.0f} s" if chunks > 1 else "whole"
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


class Separated(NamedTuple):
    tracks: dict[str, Path]  # each track's file
    seconds: float  # what of the song was separated, as decoded: all of it, or its range
    waveforms: dict[str, Path]  # each track's waveform (worker/mixdown.py)
    reconstruction_db: float  # how closely the tracks sum to the song
    encoded_in: float = 0.0  # seconds from Demucs' last run to the tracks written


@dataclass(frozen=True)
class Hooks:
    """What a separation tells its worker, and asks it, as it goes."""

    abandon: Callable[[], bool] = lambda: False  # asked every 0.2 s: true stops it (killed, Abandoned)
    report: Callable[[float], None] = lambda percent: None  # the progress percentage, about once a second
    # A part of the tracks is final, its first `frames` frames: each track's file of it (in a thread of its own,
    # while Demucs goes on; a part is told once, the next always longer).
    ready: Callable[[int, dict[str, Path]], None] | None = None
    preempt: Callable[[int], float] = lambda group: 0.0  # may stop Demucs' process group a while (worker/loop.py)


def separate(song: DemucsRun, tracks: tuple[str, ...], config: SeparationConfig, log_path: Path,
             hooks: Hooks = Hooks()) -> Separated:
    """Separate the song, or its range (`start`, `end`), into `tracks`; raise SeparationFailed with the reason
    otherwise.

    One way through: decode the song as its door did (msaas/audio.py), keeping the range and what Demucs must hear
    around it (worker/chunks.py `window`); lay it out from that one length (`layout`), with a short first chunk when
    parts are to be served before the whole (`first_part`); run Demucs on the chunks in turn, the first two in one
    process; hand each part of the tracks that is final to `hooks.ready` as soon as it is; then encode each track,
    trimmed to the range, in parallel (worker/mixdown.py: one gain for every track). Past its time limit,
    or when `hooks.abandon()` turns true, a Demucs run's whole process group is killed.
    """
    folder = song.out_dir.parent / "input"
    folder.mkdir(parents=True)
    whole = folder / f"{song.input_path.stem}.wav"
    options = song.options
    grid = engines.segment_grid(song.model, config.demucs.segment, options.overlap)
    asked = round(options.start * SAMPLE_RATE), None if options.end is None else round(options.end * SAMPLE_RATE)
    first, last = chunks.window(*asked, grid, grid[1] if models.hears_neighbours(song.model) else 0)
    decoded = decode(song.input_path, whole, config.max_seconds, first, last)
    if asked[0] >= decoded.frames or (asked[1] or 0) > decoded.frames:
        raise SeparationFailed(f"the range {options.start:g} to {options.end or 'the end'} s is past the song's end "
                               f"({decoded.frames / SAMPLE_RATE:.3f} s)")
    keep = (asked[0] - first, (asked[1] or decoded.frames) - first)  # the range, in the frames decoded
    plan = layout(decoded.kept / SAMPLE_RATE, song.model, config)
    chunk, overlap = int(plan.chunk_seconds * SAMPLE_RATE), int(config.chunk_overlap_seconds * SAMPLE_RATE)
    parts = chunks.plan(decoded.kept, chunk, overlap, grid, first_part(keep, config))
    head = parts != chunks.plan(decoded.kept, chunk, overlap, grid)  # a first part fit in before the rest
    inputs = [whole]
    if len(parts) > 1:
        inputs = chunks.write_inputs(whole, parts, folder)
        whole.unlink()  # the chunks hold it all now; disk is scarce in a pod
    log.info("%s: %.0f s%s, separating %s%s", song.input_path.name, decoded.frames / SAMPLE_RATE,
             f", its range {options.start:g} to {options.end or 'the end'} s" if options.is_range else "",
             plan.describe(len(parts) - bool(head)),
             f", its first {(chunks.final_until(parts, 0) - keep[0]) / SAMPLE_RATE:.1f} s first" if head else "")
    if plan.peak_mib > plan.budget_mib:
        log.warning("MEMORY_BUDGET_MIB (%.0f MiB) is below what the smallest layout needs (about %.0f MiB for %.0f s "
                    "chunks): separating anyway, and Demucs may be killed for memory", config.memory_budget_mib,
                    plan.peak_mib, MIN_CHUNK_SECONDS)
    stems = {track: [song.track_path(track, path) for path in inputs] for track in tracks}

    def mix(stems: dict[str, list[Path]], grid: list[chunks.Chunk], folder: Path, cpus: int,
            frames: tuple[int, int]) -> mixdown.Mixdown:
        return mixdown.write_tracks(stems, grid, folder, options, cpus, song.input_path, config.max_seconds, frames,
                                    (first, last))

    writer = PartWriter(stems, parts, keep, mix, song.out_dir / "parts", hooks.ready)
    # One process per chunk. A single Demucs run over all chunks would load the model once, but Demucs' CLI keeps
    # one track's stems while it separates the next, so its peak would be that of two chunks: only Demucs' short
    # first chunk shares its process with the next (another engine's runs it alone: a model load more).
    # The time limit policy (worker/policies.py): from the length separated, how many times Demucs goes over it, and
    # the model's cost.
    deadline = Deadline(config.time_limit().seconds(decoded.kept / SAMPLE_RATE, song.passes(),
                                                    models.relative_cost(song.model)), "separation")
    together = head and models.engines_of(song.model) == ("demucs",)
    groups = [[0, 1], *([index] for index in range(2, len(inputs)))] if together else [[i] for i in range(len(inputs))]
    length = {index: part.end - part.start for index, part in enumerate(parts)}
    total, separated = sum(length.values()), 0  # frames of the chunks, and of those separated so far
    configs = engines.EngineConfigs(config.demucs, config.roformer)
    try:
        for group in groups:
            frames = sum(length[index] for index in group)
            part = replace(song, inputs=tuple(inputs[index] for index in group), jobs=plan.jobs, threads=plan.threads)

            def report(percent: float, done: int = separated, frames: int = frames) -> None:
                hooks.report(100 * (done + frames * percent / 100) / total)

            if len(group) > 1:  # Demucs, two inputs in one run: each one's stems heard as soon as they are written
                run(part, config.demucs, log_path, deadline, hooks.abandon, report,
                    lambda index, group=group: writer.written(group[index]),
                    tuple(length[index] / frames for index in group), hooks.preempt)
            else:
                engines.separate_part(part, part.inputs[0], configs, log_path, deadline, hooks.abandon, report,
                                      hooks.preempt)
                writer.written(group[0])
            separated += frames
            for path in part.inputs:
                path.unlink()
    finally:
        writer.close()
    ran = time.monotonic()
    check_stems(stems, parts, log_path)
    mixed = mix(stems, parts, song.out_dir / "joined", config.cpus, keep)
    return Separated(mixed.tracks, (keep[1] - keep[0]) / SAMPLE_RATE, mixed.waveforms, mixed.reconstruction_db,
                     time.monotonic() - ran)


def first_part(keep: tuple[int, int], config: SeparationConfig) -> int:
    """Where a short first chunk should be final, in the frames decoded (0: none): FIRST_PART_SECONDS into the range,
    for a range at least FIRST_PART_FACTOR times as long (the seam costs two segments; a short range comes whole
    soon enough). htdemucs' first chunk for the default 10 s is 4 segments: twice the 2 a 2-CPU worker runs at
    once, so its first 13.65 s come after two segments' time and a model load (bench/RESULTS.md)."""
    wanted = int(config.first_part_seconds * SAMPLE_RATE)
    if not wanted or keep[1] - keep[0] < FIRST_PART_FACTOR * wanted:
        return 0
    return keep[0] + wanted


class Decoded(NamedTuple):
    frames: int  # the song's
    kept: int  # those written: the range and what Demucs must hear around it


def decode(song: Path, whole: Path, max_seconds: float, first: int = 0, last: int | None = None) -> Decoded:
    """Decode the song as its door did (msaas/audio.py, the same call) into a float WAV at the level Demucs hears
    it (worker/encoding.py), keeping its frames [first, last) only; decoded whole all the same, so the range is
    the whole song's, frame for frame."""
    try:
        with wav.SongWriter(whole, encoding.LEVEL, first, last) as writer:
            frames = audio.decode(str(song), max_seconds, writer.write)
    except BadRequest as refusal:  # a job pushed without passing the door, or a door with another ffmpeg
        raise SeparationFailed(refusal.message) from None
    return Decoded(frames, writer.kept)


class PartWriter:
    """The parts of the tracks that are final before the whole is: as each chunk's stems are written, the tracks
    up to where the next chunk fades in (trimmed to the range) are written as the whole's are (worker/mixdown.py)
    and handed on, in a thread of its own so Demucs' run is watched meanwhile; one at a time, in order. A part that
    fails is logged, not fatal: the whole still comes."""

    def __init__(self, stems: dict[str, list[Path]], grid: list[chunks.Chunk], keep: tuple[int, int],
                 mix: Callable[..., mixdown.Mixdown], folder: Path,
                 ready: Callable[[int, dict[str, Path]], None] | None):
        self.stems, self.grid, self.keep, self.mix = stems, grid, keep, mix
        self.folder, self.ready = folder, ready
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="parts") if ready and len(grid) > 1 else None
        self.told = 0  # frames of the range handed on so far

    def written(self, index: int) -> None:
        """The stems of chunk `index` are written."""
        frames = min(chunks.final_until(self.grid, index), self.keep[1]) - self.keep[0]
        if self.pool is None or index + 1 >= len(self.grid) or frames <= self.told:
            return
        self.told = frames
        self.pool.submit(self._write, index, frames)

    def _write(self, index: int, frames: int) -> None:
        try:
            stems = {track: paths[:index + 1] for track, paths in self.stems.items()}
            mixed = self.mix(stems, self.grid[:index + 1], self.folder / str(frames), 1,
                             (self.keep[0], self.keep[0] + frames))
            self.ready(frames, mixed.tracks)
        except Exception:
            log.exception("the tracks' first %.1f s could not be handed on; the whole still comes",
                          frames / SAMPLE_RATE)

    def close(self) -> None:
        """Wait for the part being handed on; drop those not begun."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def check_stems(stems: dict[str, list[Path]], grid: list[chunks.Chunk], log_path: Path) -> None:
    """Every stem Demucs should have written is there, as long as what it separated."""
    for track, paths in stems.items():
        for path, chunk in zip(paths, grid, strict=True):
            if not path.is_file() or path.stat().st_size == 0:
                raise SeparationFailed(f"demucs exited 0 but produced no {track} track: "
                                       f"{last_line(tail(log_path)) or 'no output'}")
            if (frames := wav.locate(path)[1]) != chunk.end - chunk.start:
                raise SeparationFailed(f"demucs wrote {frames} frames of {track} for {chunk.end - chunk.start} of song")
