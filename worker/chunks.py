"""Long songs in bounded memory: cut the song into overlapping chunks, let Demucs separate each, and join
each stem with a crossfade over every overlap.

Demucs holds the whole song, and four stems of it, in memory (about 0.2 GiB per minute with htdemucs), so a
long song can exhaust a pod's memory. Chunked, its peak depends on the chunk length only.

Clean seams: Demucs itself cuts its input into segments on a grid of `stride` frames from the start, and
cross-weights them. Chunks start on that same grid, and every chunk but the last ends where a segment ends,
so inside a chunk Demucs computes what it computes for the whole song, except within a quarter segment of the
chunk's ends. The crossfade covers the overlap but those edges. On that grid two chunks share at least one
segment (7.8 s for htdemucs), whatever overlap is asked for.
"""

from __future__ import annotations

import math
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import lameenc
import numpy as np

from msaas.models import MODELS

SAMPLE_RATE = 44100  # every Demucs model's rate
CHANNELS = 2
# Chunks go to Demucs 48 dB quieter and come back as float WAVs: Demucs clamps float output to ±1, and a
# stem may peak above full scale before the level is restored. A power of two scales without rounding, and
# Demucs normalises its input by its standard deviation, so the level changes nothing else.
LEVEL = 2.0**-8
BLOCK = 1 << 16  # frames handled at a time when copying, joining and encoding


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


def plan(frames: int, chunk: int, overlap: int, grid: tuple[int, int] = (1, 1)) -> list[Chunk]:
    """Chunks of about `chunk` frames sharing at least `overlap` frames, aligned to Demucs' segment grid."""
    if chunk <= 0 or frames <= chunk:
        return [Chunk(0, frames)]
    segment, stride = grid
    tail = segment - stride  # a chunk of n * stride + tail frames ends where its last whole segment ends
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


def decode(song: Path, raw: Path, seconds: float) -> int:
    """Decode `song` to interleaved float32 stereo at 44.1 kHz in `raw`; return its length in frames.

    ffmpeg streams, so memory stays flat; its decoding matches Demucs' own (sphn) to within 2e-6. It stops at
    the song's measured length (and a second), so no file yields more audio than it was accepted for.
    """
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-i", str(song), "-t", f"{seconds + 1:.3f}",
         "-f", "f32le", "-ac", str(CHANNELS), "-ar", str(SAMPLE_RATE), str(raw)],
        check=True, capture_output=True,
    )
    return raw.stat().st_size // (4 * CHANNELS)


def write_inputs(raw: Path, chunks: list[Chunk], folder: Path) -> list[Path]:
    """Write each chunk of the decoded song as a float WAV at `LEVEL` for Demucs; return their paths."""
    song = np.memmap(raw, dtype="<f4", mode="r").reshape(-1, CHANNELS)
    paths = []
    for index, chunk in enumerate(chunks):
        path = folder / f"chunk-{index:03d}.wav"
        with open(path, "wb") as file:
            write_wav_header(file, chunk.end - chunk.start, float_samples=True)
            for at in range(chunk.start, chunk.end, BLOCK):
                file.write((song[at:min(at + BLOCK, chunk.end)] * LEVEL).astype("<f4").tobytes())
        paths.append(path)
    return paths


def joined(stems: list[Path], chunks: list[Chunk], level: float = LEVEL) -> Iterator[np.ndarray]:
    """One stem of the whole song, in blocks of (frames, channels), from each chunk's stem of it (separated at
    `level`).

    Two chunks at most are mapped at a time: the pages of a mapped file count in the worker's memory, so
    mapping them all would make it grow with the song again (670 MiB for 30 minutes)."""
    before = None
    for index, (chunk, path) in enumerate(zip(chunks, stems, strict=True)):
        part = read_wav(path)
        begin = chunk.start
        if index:
            previous = chunks[index - 1]
            first, last = chunk.fade_in
            for at in range(first, last, BLOCK):
                stop = min(at + BLOCK, last)
                rising = ((np.arange(at, stop) - first + 0.5) / (last - first))[:, None].astype(np.float32)
                yield (before[at - previous.start:stop - previous.start] * (1 - rising)
                       + part[at - chunk.start:stop - chunk.start] * rising) / level
            begin = last
        finish = chunks[index + 1].fade_in[0] if index + 1 < len(chunks) else chunk.end
        for at in range(begin, finish, BLOCK):
            yield part[at - chunk.start:min(at + BLOCK, finish) - chunk.start] / level
        before = part


def join(stems: list[Path], chunks: list[Chunk], path: Path, kind: str, mp3_bitrate: int,
         level: float = LEVEL, rescale: bool = True) -> None:
    """Join one stem's chunks into `path`, as Demucs would have written the whole song: rescaled to avoid
    clipping (its default `--clip-mode rescale`, over the whole song), then encoded as `kind`. A song separated
    whole is one chunk at level 1 that Demucs has rescaled already (`rescale` False: no pass to find its peak)."""
    gain = 1.0
    if rescale:
        peak = max((float(np.abs(block).max()) for block in joined(stems, chunks, level) if block.size), default=0.0)
        gain = 1 / max(1.01 * peak, 1)
    frames = chunks[-1].end
    with Encoder(path, kind, frames, mp3_bitrate) as encoder:
        for block in joined(stems, chunks, level):
            encoder.write(block * gain)


class Encoder:
    """Writes 16-bit audio as Demucs' `save_audio` does, a block at a time: MP3 (lameenc, quality 2),
    WAV, or FLAC (through ffmpeg)."""

    def __init__(self, path: Path, kind: str, frames: int, mp3_bitrate: int) -> None:
        self.kind = kind
        self.ffmpeg = self.lame = None
        if kind == "flac":  # ffmpeg writes the file itself: it seeks back to complete the FLAC header
            self.file = None
            self.ffmpeg = subprocess.Popen(
                [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "s16le",
                 "-ar", str(SAMPLE_RATE), "-ac", str(CHANNELS), "-i", "-", str(path)],
                stdin=subprocess.PIPE,
            )
            return
        self.file = open(path, "wb")
        if kind == "mp3":
            self.lame = lameenc.Encoder()
            self.lame.set_bit_rate(mp3_bitrate)
            self.lame.set_in_sample_rate(SAMPLE_RATE)
            self.lame.set_channels(CHANNELS)
            self.lame.set_quality(2)
            self.lame.silence()
        else:
            write_wav_header(self.file, frames, float_samples=False)

    def write(self, block: np.ndarray) -> None:
        pcm = (np.clip(block, -1, 1) * (2**15 - 1)).astype("<i2").tobytes()  # Demucs' i16_pcm
        if self.lame:
            self.file.write(self.lame.encode(pcm))
        elif self.ffmpeg:
            self.ffmpeg.stdin.write(pcm)
        else:
            self.file.write(pcm)

    def __enter__(self) -> Encoder:
        return self

    def __exit__(self, *failure: object) -> None:
        if self.lame:
            self.file.write(self.lame.flush())
        if self.ffmpeg:
            self.ffmpeg.stdin.close()
            if self.ffmpeg.wait() and not failure[0]:
                raise RuntimeError(f"ffmpeg could not encode {self.kind}")
        else:
            self.file.close()


def write_wav_header(file, frames: int, float_samples: bool) -> None:
    """A canonical WAV header, as Demucs' `encode_wav` writes it, for `frames` frames to follow."""
    width = 4 if float_samples else 2
    size = frames * CHANNELS * width
    fmt = struct.pack("<HHIIHH", 3 if float_samples else 1, CHANNELS, SAMPLE_RATE, SAMPLE_RATE * CHANNELS * width,
                      CHANNELS * width, 8 * width)
    chunks = [(b"fmt ", fmt)] + ([(b"fact", struct.pack("<I", frames))] if float_samples else [])
    riff = 4 + sum(8 + len(body) for _, body in chunks) + 8 + size
    file.write(b"RIFF" + struct.pack("<I", riff) + b"WAVE")
    for name, body in chunks:
        file.write(name + struct.pack("<I", len(body)) + body)
    file.write(b"data" + struct.pack("<I", size))


def read_wav(path: Path) -> np.ndarray:
    """A float WAV as written by Demucs (`--float32`), mapped from disk as (frames, channels)."""
    with open(path, "rb") as file:
        header = file.read(12)
        if header[:4] != b"RIFF" or header[8:] != b"WAVE":
            raise ValueError(f"{path} is not a WAV file")
        offset = 12
        while True:
            name, size = struct.unpack("<4sI", file.read(8))
            offset += 8
            if name == b"fmt ":
                audio_format, channels = struct.unpack("<HH", file.read(4))
                file.seek(size - 4, 1)
                if audio_format != 3 or channels != CHANNELS:
                    raise ValueError(f"{path} is not stereo float32 (format {audio_format}, {channels} channels)")
            elif name == b"data":
                return np.memmap(path, dtype="<f4", mode="r", offset=offset, shape=(size // 4 // CHANNELS, CHANNELS))
            else:
                file.seek(size, 1)
            offset += size
