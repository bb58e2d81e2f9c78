"""The worker's side of the engines (msaas/engines.py): one part of a song (the whole, or a chunk) separated by its
model's engine, each run a child process killed whole past the deadline or on cancel (worker/demucs_run.py's
`run`): `demucs.separate`, worker/roformer_run.py, or both in turn for a two-model entry, whose stems are then
combined (`combine`). Each leaves `<out>/<model>/<input name>/<track>.wav`, float, as Demucs does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from msaas import models
from msaas.audio import SAMPLE_RATE
from msaas.deadline import Deadline
from msaas.engines import Capability, longest_song
from msaas.models import MODELS
from worker import chunks, wav
from worker.demucs_run import DemucsConfig, DemucsRun, SeparationFailed, run
from worker.policies import TimeLimit
from worker.roformer_run import RoformerConfig, RoformerRun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfigs:
    demucs: DemucsConfig
    roformer: RoformerConfig


def segment_grid(model: str, segment: int | None, overlap: float) -> tuple[int, int]:
    """(window, step) in frames of the model's engine, for chunks aligned to its windows (worker/chunks.py): Demucs'
    grid; a RoFormer's windows step by window / ceil(1 / (1 - overlap)) (audio-separator's `num_overlap`); a pair's
    chunks follow its Demucs part (the RoFormer's seams are crossfaded as any)."""
    entry = MODELS.get(model)
    if entry is None or entry.engine == "demucs":
        return chunks.segment_grid(model, segment, overlap)
    if entry.parts:
        return segment_grid(entry.parts[1], segment, overlap)
    window = int(SAMPLE_RATE * entry.segment) if entry.segment else 1
    return window, max(1, int(window / -(-Fraction(1) // (1 - Fraction(overlap).limit_denominator(1000)))))


def separate_part(song: DemucsRun, path: Path, configs: EngineConfigs, log_path: Path, deadline: Deadline,
                  abandon: Callable[[], bool], report: Callable[[float], None],
                  preempt: Callable[[int], float] = lambda group: 0.0) -> None:
    """Separate one input (the song, or a chunk) with `song.model`; its tracks at `song.track_path(track, path)`.
    `preempt` may stop each run a while for a preview (worker/loop.py)."""
    entry = MODELS.get(song.model)
    if entry is None or entry.engine == "demucs":
        run(replace(song, inputs=(path,)), configs.demucs, log_path, deadline, abandon, report, preempt=preempt)
    elif not entry.parts:
        run_roformer(song, path, configs.roformer, log_path, deadline, abandon, report, preempt)
    else:
        vocals, rest = entry.parts
        share = models.relative_cost(vocals) / (models.relative_cost(vocals) + models.relative_cost(rest))
        run_roformer(replace(song, model=vocals), path, configs.roformer, log_path, deadline, abandon,
                     lambda percent: report(percent * share), preempt)
        run(replace(song, model=rest, inputs=(path,), jobs=1), configs.demucs, log_path, deadline, abandon,
            lambda percent: report(100 * share + percent * (1 - share)), preempt=preempt)
        combine(replace(song, model=vocals), replace(song, model=rest), song, path)


def run_roformer(song: DemucsRun, path: Path, config: RoformerConfig, log_path: Path, deadline: Deadline,
                 abandon: Callable[[], bool], report: Callable[[float], None],
                 preempt: Callable[[int], float] = lambda group: 0.0) -> None:
    roformer = RoformerRun(song.model, song.input_path, song.out_dir, song.options, (path,), threads=song.threads)
    try:
        run(roformer, config, log_path, deadline, abandon, report, preempt=preempt)
    except SeparationFailed as failure:
        weights = MODELS[song.model].weights
        if config.local_dir and "could not download" in str(failure):
            raise SeparationFailed(f"{failure} (MODEL_DIR {config.local_dir} holds no {weights} either)") from None
        raise


def combine(vocals: DemucsRun, rest: DemucsRun, pair: DemucsRun, path: Path) -> None:
    """A pair's stems of one input: the RoFormer's vocals; Demucs' drums and bass; Demucs' other plus what Demucs
    heard as vocals and the RoFormer did not, so the four sum to the song as Demucs' four do."""
    folder = pair.track_path("vocals", path).parent
    folder.mkdir(parents=True, exist_ok=True)
    sung, theirs = wav.read(vocals.track_path("vocals", path)), wav.read(rest.track_path("vocals", path))
    if len(sung) != len(theirs):
        raise SeparationFailed(f"the two models of {pair.model} separated {len(sung)} and {len(theirs)} frames")
    for track in ("drums", "bass"):
        rest.track_path(track, path).replace(pair.track_path(track, path))
    other = wav.read(rest.track_path("other", path))
    with open(pair.track_path("other", path), "wb") as file:
        wav.write_header(file, len(other), float_samples=True)
        for at in range(0, len(other), wav.BLOCK):
            block = slice(at, at + wav.BLOCK)
            file.write(np.ascontiguousarray(other[block] + theirs[block] - sung[block], dtype="<f4").tobytes())
    vocals.track_path("vocals", path).replace(pair.track_path("vocals", path))
    for leftover in (rest.track_path("vocals", path), rest.track_path("other", path),
                     vocals.track_path("no_vocals", path)):
        leftover.unlink(missing_ok=True)


def capability(served: tuple[str, ...], device: str, cpus: int, time_limit: TimeLimit,
               max_seconds: float) -> Capability:
    """What this worker says in its heartbeat: the engines it serves, on what, and for each model it serves the longest
    song it expects to finish within its time limit (the door refuses longer ones: msaas/engines.py)."""
    longest = {name: longest_song(name, device, cpus,
                                  lambda seconds, name=name: time_limit.seconds(seconds, 1, models.relative_cost(name)),
                                  max_seconds)
               for name, model in MODELS.items() if set(model.engines) <= set(served)}
    return Capability(served, device, cpus, {name: seconds for name, seconds in longest.items() if seconds is not None})
