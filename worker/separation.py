"""A song's separation: how long it may take, whether it goes whole or in chunks, the Demucs runs, and the join.

A song longer than one chunk (about `CHUNK_SECONDS`) is separated in chunks and joined (worker/chunks.py); a song
that fits in one goes to Demucs as it is, which encodes its tracks itself. Each run is worker/demucs_run.py's.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from msaas.deadline import Deadline
from msaas.settings import Settings
from worker import chunks
from worker.demucs_run import DemucsConfig, DemucsRun, SeparationFailed, check_space, last_line, run, tail

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeparationConfig:
    """The settings a separation needs, taken once from `Settings`."""

    demucs: DemucsConfig = DemucsConfig()
    chunk_seconds: float = 60.0
    chunk_overlap_seconds: float = 5.0
    timeout_min: float = 120.0
    timeout_factor: float = 10.0

    @classmethod
    def of(cls, settings: Settings) -> SeparationConfig:
        return cls(DemucsConfig.of(settings), settings.chunk_seconds, settings.chunk_overlap_seconds,
                   settings.demucs_timeout_min, settings.demucs_timeout_factor)


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

    A song longer than one chunk (about `CHUNK_SECONDS`) is separated in chunks and joined (worker/chunks.py);
    a song that fits in one goes to Demucs as it is, which encodes its tracks itself. Past its time
    limit, or when `abandon()` turns true, the whole process group is killed. `report` hears the progress
    percentage about once a second.
    """
    limit = config.timeout_min + config.timeout_factor * seconds
    deadline = Deadline(limit, "demucs")
    plan: list[chunks.Chunk] = []
    if len(chunk_plan(song, config, round(seconds * chunks.SAMPLE_RATE))) > 1:
        song, plan = cut(song, config, seconds)
    # One Demucs process per chunk. A single run over all chunks would load the model once, but Demucs' CLI
    # keeps one track's stems while it separates the next, so its peak would be that of two chunks; a model
    # load (about 3 s, the weights being in the page cache) per minute-long chunk is the cheaper price.
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
    if not song.chunks:
        return {track: song.track_path(track) for track in tracks}
    joined = song.out_dir / "joined"
    joined.mkdir()
    outputs = {}
    for track in tracks:
        outputs[track] = joined / f"{track}.{song.options.format}"
        chunks.join([song.track_path(track, source) for source in song.chunks], plan, outputs[track],
                    song.options.format, song.options.mp3_bitrate)
    return outputs


def cut(run: DemucsRun, config: SeparationConfig, seconds: float) -> tuple[DemucsRun, list[chunks.Chunk]]:
    """Decode the song (no further than its measured length) and write its chunks for Demucs; the run that
    separates them, and the plan."""
    folder = run.out_dir.parent / "chunks"
    folder.mkdir(parents=True)
    raw = folder / "song.f32"
    try:
        frames = chunks.decode(run.input_path, raw, seconds)
    except subprocess.CalledProcessError as error:
        said = error.stderr.decode(errors="replace")
        check_space(said, raw)
        raise SeparationFailed(f"the input does not decode as audio: {last_line(said)}") from None
    plan = chunk_plan(run, config, frames)
    paths = chunks.write_inputs(raw, plan, folder)
    raw.unlink()  # the chunks hold it all now; disk is scarce in a pod
    log.info("%s: %.0f s of audio, separating in %d chunks", run.input_path.name, frames / chunks.SAMPLE_RATE,
             len(plan))
    return replace(run, chunks=tuple(paths)), plan


def chunk_plan(run: DemucsRun, config: SeparationConfig, frames: int) -> list[chunks.Chunk]:
    rate = chunks.SAMPLE_RATE
    return chunks.plan(frames, int(config.chunk_seconds * rate), int(config.chunk_overlap_seconds * rate),
                       chunks.segment_grid(run.model, config.demucs.segment, run.options.overlap))
