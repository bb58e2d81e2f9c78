"""Long songs in bounded memory: cut the song into overlapping chunks, let Demucs separate each, and join
each stem with a crossfade over every overlap.

Demucs holds the whole song, and four stems of it, in memory (about 0.2 GiB per minute with htdemucs), so a
long song can exhaust a pod's memory. Chunked, its peak depends on the chunk length only.

Clean seams: Demucs itself cuts its input into segments on a grid of `stride` frames from the start, and
cross-weights them. Chunks start on that same grid, and every chunk but the last ends where a segment ends,
so inside a chunk Demucs computes what it computes for the whole song, except within a quarter segment of the
chunk's ends. The crossfade covers the overlap but those edges. On that grid two chunks share at least one
segment (7.8 s for htdemucs), whatever overlap is asked for. The joined stems are rescaled and encoded as a whole
song's are (worker/encoding.py).

The same grid serves two more plans. A range of the song (`window`) is separated with enough of the song either
side that Demucs computes the range as in the whole song, then trimmed. A song heard sooner starts with a short
first chunk (`plan`'s `first`): its stems are the song's up to where the next chunk fades in, so that part can be
served while the rest is separated, at the cost of one seam (two segments separated twice).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from msaas.audio import FRAME_BYTES, SAMPLE_RATE
from msaas.models import MODELS
from worker import wav


@dataclass(frozen=True)
class Chunk:
    start: int  # first frame of the song in this chunk
    end: int  # one past its last frame
    fade_in: tuple[int, int] = (0, 0)  # frames where this chunk fades in as the previous one fades out


def segment_grid(model: str, segment: int | None, overlap: float = 0.25) -> tuple[int, int]:
    """(segment, stride) in frames, as Demucs computes them; (1, 1) when the model's segment is unknown."""
    seconds = segment or (MODELS[model].segment if model in MODELS else None)
    if seconds is None:
        return 1, 1
    length = int(SAMPLE_RATE * seconds)
    return length, int((1 - Fraction(overlap).limit_denominator(1000)) * length)  # Demucs' --overlap


def window(start: int, end: int | None, grid: tuple[int, int], reach: int = 0) -> tuple[int, int | None]:
    """The frames of the song to separate for its range [start, end) (end None: to the song's end), so that each
    frame of the range is computed from the same segments as in the whole song, each hearing the same audio: from
    the point of Demucs' grid before the range's first segments (and `reach` more, what a segment hears of its
    neighbours), to the end of the last segment that covers the range (and `reach` more)."""
    segment, stride = grid
    tail = segment - stride  # where a chunk starts, Demucs' cross-weighting differs for this long
    first = max(0, (start - tail - reach) // stride * stride) if start > 0 else 0
    return first, None if end is None else (end - 1) // stride * stride + segment + reach


def plan(frames: int, chunk: int, overlap: int, grid: tuple[int, int] = (1, 1), first: int = 0) -> list[Chunk]:
    """Chunks of about `chunk` frames sharing at least `overlap` frames, aligned to Demucs' segment grid; with
    `first`, a short first chunk whose stems are the whole song's up to `first` at least, then the rest planned
    as the song would be alone (a seam more)."""
    segment, stride = grid
    tail = segment - stride  # a chunk of n * stride + tail frames ends where its last whole segment ends
    if first > 0:
        start = max(stride, math.ceil((first - tail) / stride) * stride)  # the rest is the song's from start + tail
        head = min(frames, math.ceil((start + overlap - tail) / stride) * stride + tail)
        if head < frames:
            rest = [Chunk(part.start + start, part.end + start, (part.fade_in[0] + start, part.fade_in[1] + start))
                    for part in plan(frames - start, chunk, overlap, grid)]
            rest[0] = Chunk(start, rest[0].end, (start + tail, head - tail))
            return [Chunk(0, head), *rest]
    if chunk <= 0 or frames <= chunk:
        return [Chunk(0, frames)]
    step = max(stride, (chunk - overlap) // stride * stride)
    length = math.ceil((step + overlap - tail) / stride) * stride + tail
    starts = range(0, frames, step)
    chunks: list[Chunk] = []
    for start in starts:
        end = min(start + length, frames)
        if chunks:
            chunks.append(Chunk(start, end, (start + tail, chunks[-1].end - tail)))
        else:
            chunks.append(Chunk(start, end))
        if end == frames:
            break
    return chunks


def write_inputs(song: Path, chunks: list[Chunk], folder: Path) -> list[Path]:
    """Write each chunk of the song (a float WAV at the level Demucs hears it) as a float WAV; return their paths.

    Read, not mapped: every page of a mapped song would count in the worker's memory (1.3 GiB for an hour)."""
    offset, _ = wav.locate(song)
    paths = []
    with open(song, "rb") as audio:
        for index, chunk in enumerate(chunks):
            path = folder / f"chunk-{index:03d}.wav"
            with open(path, "wb") as file:
                wav.write_header(file, chunk.end - chunk.start, float_samples=True)
                audio.seek(offset + chunk.start * FRAME_BYTES)
                for at in range(chunk.start, chunk.end, wav.BLOCK):
                    file.write(audio.read((min(at + wav.BLOCK, chunk.end) - at) * FRAME_BYTES))
            paths.append(path)
    return paths


def joined(stems: list[Path], chunks: list[Chunk]) -> Iterator[np.ndarray]:
    """One stem of the whole song, in blocks of (frames, channels), from each chunk's stem of it, crossfaded over
    each overlap (at the level the chunks were separated at).

    Two chunks at most are mapped at a time: the pages of a mapped file count in the worker's memory, so
    mapping them all would make it grow with the song again (670 MiB for 30 minutes)."""
    before = None
    for index, (chunk, path) in enumerate(zip(chunks, stems, strict=True)):
        part = wav.read(path)
        begin = chunk.start
        if index:
            previous = chunks[index - 1]
            first, last = chunk.fade_in
            for at in range(first, last, wav.BLOCK):
                stop = min(at + wav.BLOCK, last)
                rising = ((np.arange(at, stop) - first + 0.5) / (last - first))[:, None].astype(np.float32)
                yield (before[at - previous.start:stop - previous.start] * (1 - rising)
                       + part[at - chunk.start:stop - chunk.start] * rising)
            begin = last
        finish = chunks[index + 1].fade_in[0] if index + 1 < len(chunks) else chunk.end
        for at in range(begin, finish, wav.BLOCK):
            yield part[at - chunk.start:min(at + wav.BLOCK, finish) - chunk.start]
        before = part


def final_until(chunks: list[Chunk], index: int) -> int:
    """The frames of the song whose stems are final once chunks 0 to `index` are separated: up to where the next
    chunk fades in."""
    return chunks[index + 1].fade_in[0] if index + 1 < len(chunks) else chunks[index].end
