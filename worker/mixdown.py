"""From Demucs' stems to a result's tracks that sum to the song: one gain for every track, the residual on request,
how closely the tracks as stored rebuild the song, and each track's waveform.

- Residual (option `residual`): the song as decoded less the sum of the stems, sample by sample, so the tracks
  sum to the song whatever the model leaves out.
- Clipping: tracks are never rescaled differently from one another. Float32 WAV tracks (option `sample_format`)
  keep every sample as computed, above full scale too. 16-bit tracks (MP3, WAV, FLAC) would clip where a track
  goes above full scale; then every track of the result is divided by the same 1.01 times the highest peak among
  them (Demucs' `--clip-mode rescale` rule, over all the tracks at once), so they still sum to the song, at that
  one lower level, and none clips.
- `reconstruction_db` (the status): the song at the tracks' level against the sum of the tracks as a reader
  decodes them (16-bit samples / 32768, or the float32 ones), as a signal-to-difference ratio in dB. Float32 with
  the residual: 90 dB and more (float rounding). Without the residual it measures what the model leaves out;
  16-bit samples cap it near 90 dB (Demucs writes x * 32767, readers take n / 32768); MP3's coding error comes on
  top.
- Waveform: for each track, the lowest and highest sample of either channel in each of up to `BUCKETS` equal spans
  of the song, as integers from -127 to 127 (full scale), always spanning 0: under 20 KB of JSON.

Two passes over the stems, as the rescale needs: the peaks (and the residual, written beside them), then every
track a block at a time in step, each encoded on a thread of its own, their sum compared with the song's block.

A range's tracks, and the parts of the tracks served before the whole (issue 23), are written the same way over
their own frames (`keep`): a part's gain is decided over the part, so it is the whole track's start sample for
sample unless a later part of some 16-bit track peaks higher; then the whole comes at that lower gain.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from msaas import audio
from msaas.audio import SAMPLE_RATE
from msaas.naming import Result, waveform_key
from msaas.options import Options
from msaas.storage import ObjectStore
from worker import chunks, encoding, wav
from worker.demucs_run import SeparationFailed

RESIDUAL = "residual"
HEADROOM = 1.01  # Demucs' rescale: divided by this times the peak
BUCKETS = 2000
SCALE = 127  # a waveform's full scale
EXACT_DB = 200.0  # reported when the tracks sum to the song bit for bit (or closer than this)
I16 = 2**15  # what readers divide 16-bit samples by
Blocks = Callable[[], Iterable[np.ndarray]]  # a track's blocks, from its start, each time called


def separated_tracks(options: Options) -> tuple[str, ...]:
    """The tracks the model writes: the result's, but the residual, which is made here."""
    return tuple(track for track in options.tracks() if track != RESIDUAL)


@dataclass(frozen=True)
class Mixdown:
    tracks: dict[str, Path]  # each track's file, encoded
    waveforms: dict[str, Path]  # each track's waveform (JSON)
    reconstruction_db: float
    gain: float  # every track's level against the song's: 1, or less where 16-bit tracks would have clipped


def write_tracks(stems: dict[str, list[Path]], grid: list[chunks.Chunk], folder: Path, options: Options,
                 cpus: int, song: Path, max_seconds: float, keep: tuple[int, int] | None = None,
                 window: tuple[int, int | None] = (0, None)) -> Mixdown:
    """Each track's file in `folder`, from its stem of the song, or of each chunk joined, and from the song (the MP3
    at `song`, decoded again as it was for Demucs: its frames `window`, those the stems were separated from).

    The tracks hold the stems' frames `keep` (all of them by default): a range's, or the part of the tracks final so
    far (`grid` then the chunks separated so far); the gain is decided over those frames."""
    folder.mkdir(parents=True)
    start, stop = keep or (0, grid[-1].end)
    frames = stop - start
    whole = folder / "song.wav"
    with wav.SongWriter(whole, encoding.LEVEL, *window) as writer:
        audio.decode(str(song), max_seconds, writer.write)
    if writer.kept < grid[-1].end or (keep is None and writer.kept != grid[-1].end):
        raise SeparationFailed(f"the song decoded to {writer.kept} frames the second time, {grid[-1].end} the first")

    def trimmed(blocks: Blocks) -> Blocks:
        return lambda: between(blocks(), start, stop)

    sources: dict[str, Blocks] = {track: trimmed(_stem(paths, grid)) for track, paths in stems.items()}
    song_blocks = trimmed(_stem([whole], [chunks.Chunk(0, writer.kept)]))
    float_samples = options.sample_format == "float32"
    peak = _peak_and_residual(song_blocks, sources, folder / "residual.f32.wav" if options.residual else None, frames)
    if options.residual:
        sources[RESIDUAL] = _stem([folder / "residual.f32.wav"], [chunks.Chunk(0, frames)])
    gain = 1.0 if float_samples else 1 / max(HEADROOM * peak / encoding.LEVEL, 1.0)
    outputs = {track: folder / f"{track}.{options.format}" for track in sources}
    waveforms = {track: Waveform(frames) for track in sources}
    error = signal = 0.0
    # One track per CPU at a time: lameenc and numpy let go of the GIL while they work.
    with ExitStack() as stack, ThreadPoolExecutor(max(1, min(cpus, len(sources)))) as pool:
        encoders = {track: stack.enter_context(_encoder(path, options, frames)) for track, path in outputs.items()}
        scale = np.float32(gain / encoding.LEVEL)  # a power of two times the gain: exact when the gain is 1

        def write(track: str, block: np.ndarray) -> np.ndarray:
            written = encoders[track].write(block * scale)
            heard = written.astype(np.float64) / I16 if written.dtype == np.int16 else written.astype(np.float64)
            waveforms[track].add(heard)
            return heard

        for song_block, *blocks in zip(_aligned(song_blocks()), *(_aligned(s()) for s in sources.values()),
                                       strict=True):
            heard = list(pool.map(write, sources, blocks))
            target = song_block.astype(np.float64) * (gain / encoding.LEVEL)
            difference = np.sum(heard, axis=0) - target
            error += float(np.vdot(difference, difference))
            signal += float(np.vdot(target, target))
    whole.unlink()
    (folder / "residual.f32.wav").unlink(missing_ok=True)
    paths = {}
    for track, waveform in waveforms.items():
        paths[track] = folder / f"{track}.waveform.json"
        paths[track].write_text(json.dumps(waveform.as_json(track), separators=(",", ":")))
    return Mixdown(outputs, paths, reconstruction_db(signal, error), gain)


def reconstruction_db(signal: float, error: float) -> float:
    """Signal-to-difference in dB, within ±EXACT_DB (an exact sum has no finite ratio)."""
    if error == 0:
        return EXACT_DB
    return round(max(-EXACT_DB, min(EXACT_DB, 10 * math.log10(signal / error) if signal else -EXACT_DB)), 2)


def between(blocks: Iterable[np.ndarray], start: int, stop: int) -> Iterator[np.ndarray]:
    """The frames [start, stop) of the track whose blocks are `blocks`."""
    at = 0
    for block in blocks:
        first, last = max(start - at, 0), min(stop - at, len(block))
        if first < last:
            yield block[first:last]
        at += len(block)
        if at >= stop:
            return


def _stem(paths: list[Path], grid: list[chunks.Chunk]) -> Blocks:
    """A stem's blocks (at `encoding.LEVEL`), from its one file, or its chunks' files joined, each time called."""
    if len(grid) > 1:
        return functools.partial(chunks.joined, paths, grid)
    return lambda: encoding.blocks_of(wav.read(paths[0]))


def _peak_and_residual(song: Blocks, stems: dict[str, Blocks], residual: Path | None, frames: int) -> float:
    """The highest peak of any track, the residual's too if it is asked for (written to `residual`, a float WAV at
    the stems' level)."""
    peak = 0.0
    with ExitStack() as stack:
        if residual is not None:
            file = stack.enter_context(open(residual, "wb"))
            wav.write_header(file, frames, float_samples=True)
        for song_block, *blocks in zip(_aligned(song()), *(_aligned(s()) for s in stems.values()), strict=True):
            peak = max(peak, *(float(np.abs(block).max(initial=0)) for block in blocks))
            if residual is not None:
                rest = (song_block - np.sum(blocks, axis=0, dtype=np.float32)).astype("<f4")
                peak = max(peak, float(np.abs(rest).max(initial=0)))
                file.write(rest.tobytes())
    return peak


def _aligned(blocks: Iterable[np.ndarray], size: int = wav.BLOCK) -> Iterator[np.ndarray]:
    """The same frames in blocks of `size` (the last shorter): the joined chunks' blocks are cut at the seams."""
    held: list[np.ndarray] = []
    count = 0
    for block in blocks:
        while len(block):
            take = min(size - count, len(block))
            held.append(block[:take])
            count, block = count + take, block[take:]
            if count == size:
                yield held[0] if len(held) == 1 else np.concatenate(held)
                held, count = [], 0
    if count:
        yield held[0] if len(held) == 1 else np.concatenate(held)


def _encoder(path: Path, options: Options, frames: int):
    if options.sample_format == "float32":
        return FloatWav(path, frames)
    return encoding.Encoder(path, options.format, frames, options.mp3_bitrate)


class FloatWav:
    """A float32 WAV track: every sample as computed, above full scale too."""

    def __init__(self, path: Path, frames: int) -> None:
        self.file = open(path, "wb")
        wav.write_header(self.file, frames, float_samples=True)

    def write(self, block: np.ndarray) -> np.ndarray:
        """Write `block`; the samples written."""
        samples = block.astype("<f4", copy=False)
        self.file.write(samples.tobytes())
        return samples

    def __enter__(self) -> FloatWav:
        return self

    def __exit__(self, *failure: object) -> None:
        self.file.close()


class Waveform:
    """The lowest and highest sample of each of `BUCKETS` equal spans of a track, added a block at a time."""

    def __init__(self, frames: int, buckets: int = BUCKETS) -> None:
        self.frames, self.buckets = frames, max(1, min(buckets, frames))
        self.low, self.high = np.zeros(self.buckets), np.zeros(self.buckets)  # from 0: every span spans 0
        self.at = 0

    def add(self, block: np.ndarray) -> None:
        """The track's next frames, (frames, channels), at full scale ±1."""
        if not len(block):
            return
        spans = np.arange(self.at, self.at + len(block), dtype=np.int64) * self.buckets // self.frames
        starts = np.flatnonzero(np.diff(spans, prepend=-1))
        which = spans[starts]
        self.low[which] = np.minimum(self.low[which], np.minimum.reduceat(block.min(axis=1), starts))
        self.high[which] = np.maximum(self.high[which], np.maximum.reduceat(block.max(axis=1), starts))
        self.at += len(block)

    def as_json(self, track: str) -> dict:
        def scaled(values: np.ndarray) -> list[int]:
            return np.clip(np.round(values * SCALE), -SCALE, SCALE).astype(int).tolist()

        return {"track": track, "seconds": round(self.frames / SAMPLE_RATE, 3), "buckets": self.buckets,
                "min": scaled(self.low), "max": scaled(self.high)}


def store_waveforms(store: ObjectStore, result: Result, token: str, waveforms: dict[str, Path],
                    written: list[str]) -> None:
    """Upload each track's waveform beside it (msaas/naming.py names it), each key noted in `written` first."""
    for track, path in waveforms.items():
        written.append(waveform_key(result, token, track))
        store.put_output(written[-1], str(path), "json", "application/json")
