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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

from msaas import audio, models
from msaas.audio import SAMPLE_RATE
from msaas.deadline import Deadline
from msaas.errors import BadRequest, ConfigError
from msaas.settings import Settings
from worker import chunks, encoding, engines, mixdown, resources, wav
from worker.demucs_run import DemucsConfig, DemucsRun, SeparationFailed, last_line, tail
from worker.policies import TimeLimit
from worker.roformer_run import RoformerConfig

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
    max_seconds: float = 3600.0  # the longest song decoded (MAX_SONG_SECONDS, as at the door)
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
                   settings.demucs_timeout_max, RoformerConfig.of(settings))

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
    seconds: float  # the song's length, as decoded
    waveforms: dict[str, Path]  # each track's waveform (worker/mixdown.py)
    reconstruction_db: float  # how closely the tracks sum to the song


def separate(
    song: DemucsRun,
    tracks: tuple[str, ...],
    config: SeparationConfig,
    log_path: Path,
    abandon: Callable[[], bool] = lambda: False,
    report: Callable[[float], None] = lambda percent: None,
) -> Separated:
    """Separate the song into `tracks`; raise SeparationFailed with the reason otherwise.

    One way through: decode the song as its door did (msaas/audio.py), lay it out from that one length
    (`layout`), run Demucs on the song, or on each chunk of it in turn (worker/chunks.py), then rescale and encode
    each track, in parallel (worker/mixdown.py). Past its time limit, or when `abandon()` turns true, a Demucs run's
    whole process group is killed. `report` hears the progress percentage about once a second.
    """
    folder = song.out_dir.parent / "input"
    folder.mkdir(parents=True)
    whole = folder / f"{song.input_path.stem}.wav"
    frames = decode(song.input_path, whole, config.max_seconds)
    seconds = frames / SAMPLE_RATE
    plan = layout(seconds, song.model, config)
    grid = chunks.plan(frames, int(plan.chunk_seconds * SAMPLE_RATE), int(config.chunk_overlap_seconds * SAMPLE_RATE),
                       engines.segment_grid(song.model, config.demucs.segment, song.options.overlap))
    inputs = [whole]
    if len(grid) > 1:
        inputs = chunks.write_inputs(whole, grid, folder)
        whole.unlink()  # the chunks hold it all now; disk is scarce in a pod
    log.info("%s: %.0f s, separating %s", song.input_path.name, seconds, plan.describe(len(grid)))
    if plan.peak_mib > plan.budget_mib:
        log.warning("MEMORY_BUDGET_MIB (%.0f MiB) is below what the smallest layout needs (about %.0f MiB for %.0f s "
                    "chunks): separating anyway, and Demucs may be killed for memory", config.memory_budget_mib,
                    plan.peak_mib, MIN_CHUNK_SECONDS)
    # One Demucs process per chunk. A single run over all chunks would load the model once, but Demucs' CLI
    # keeps one track's stems while it separates the next, so its peak would be that of two chunks.
    # The time limit policy (worker/policies.py): from the song's length, and how many times Demucs goes over it.
    limit = config.time_limit().seconds(seconds, song.passes(), models.relative_cost(song.model))
    deadline = Deadline(limit, "separation")
    runs = [replace(song, inputs=(path,), jobs=plan.jobs, threads=plan.threads) for path in inputs]
    for done, part in enumerate(runs):
        engines.separate_part(part, part.inputs[0], engines.EngineConfigs(config.demucs, config.roformer), log_path,
                              deadline, abandon, lambda percent, done=done: report((done * 100 + percent) / len(runs)))
        part.inputs[0].unlink()
    stems = {track: [song.track_path(track, path) for path in inputs] for track in tracks}
    check_stems(stems, grid, log_path)
    mixed = mixdown.write_tracks(stems, grid, song.out_dir / "joined", song.options, config.cpus, song.input_path,
                                 config.max_seconds)
    return Separated(mixed.tracks, seconds, mixed.waveforms, mixed.reconstruction_db)


def decode(song: Path, whole: Path, max_seconds: float) -> int:
    """Decode the song as its door did (msaas/audio.py, the same call) into a float WAV at the level Demucs hears
    it (worker/encoding.py); its length in frames."""
    try:
        with wav.SongWriter(whole, encoding.LEVEL) as writer:
            return audio.decode(str(song), max_seconds, writer.write)
    except BadRequest as refusal:  # a job pushed without passing the door, or a door with another ffmpeg
        raise SeparationFailed(refusal.message) from None


def check_stems(stems: dict[str, list[Path]], grid: list[chunks.Chunk], log_path: Path) -> None:
    """Every stem Demucs should have written is there, as long as what it separated."""
    for track, paths in stems.items():
        for path, chunk in zip(paths, grid, strict=True):
            if not path.is_file() or path.stat().st_size == 0:
                raise SeparationFailed(f"demucs exited 0 but produced no {track} track: "
                                       f"{last_line(tail(log_path)) or 'no output'}")
            if (frames := wav.locate(path)[1]) != chunk.end - chunk.start:
                raise SeparationFailed(f"demucs wrote {frames} frames of {track} for {chunk.end - chunk.start} of song")
