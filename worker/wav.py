"""The float WAVs the worker and Demucs hand each other: the song (and its chunks) going in, the stems coming out.

Written and read a block at a time, or mapped from disk, so the worker's memory does not grow with the song."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from msaas.audio import CHANNELS, FRAME_BYTES, SAMPLE_RATE

BLOCK = 1 << 16  # frames handled at a time when copying, joining and encoding
UNKNOWN = 0xFFFFFFFF  # a size past what 32 bits hold (a float stereo WAV of 3.4 hours): "up to the file's end"


class SongWriter:
    """Writes the song as it is decoded (msaas/audio.py hands it over as interleaved float32) to a float WAV,
    times `level`, keeping its frames [first, last) only (last None: to its end); its header is completed on
    closing. It hears every frame, for the song's length (`frames`)."""

    def __init__(self, path: Path, level: float, first: int = 0, last: int | None = None) -> None:
        self.file, self.level, self.frames, self.kept = open(path, "wb"), np.float32(level), 0, 0
        self.first, self.last = first, last
        write_header(self.file, 0, float_samples=True)

    def write(self, samples: memoryview) -> None:
        block = np.frombuffer(samples, dtype="<f4").reshape(-1, CHANNELS)
        start, stop = self.first - self.frames, len(block) if self.last is None else self.last - self.frames
        kept = block[max(start, 0):max(min(stop, len(block)), 0)]
        self.file.write((kept * self.level).tobytes())  # a power of two: scaled without rounding
        self.frames += len(block)
        self.kept += len(kept)

    def __enter__(self) -> SongWriter:
        return self

    def __exit__(self, *failure: object) -> None:
        with self.file:
            self.file.seek(0)
            write_header(self.file, self.kept, float_samples=True)


def write_header(file: BinaryIO, frames: int, float_samples: bool) -> None:
    """A canonical WAV header, as Demucs' `encode_wav` writes it, for `frames` frames to follow."""
    width = 4 if float_samples else 2
    size = frames * CHANNELS * width
    fmt = struct.pack("<HHIIHH", 3 if float_samples else 1, CHANNELS, SAMPLE_RATE, SAMPLE_RATE * CHANNELS * width,
                      CHANNELS * width, 8 * width)
    chunks = [(b"fmt ", fmt)] + ([(b"fact", struct.pack("<I", frames))] if float_samples else [])
    riff = 4 + sum(8 + len(body) for _, body in chunks) + 8 + size
    file.write(b"RIFF" + struct.pack("<I", min(riff, UNKNOWN)) + b"WAVE")
    for name, body in chunks:
        file.write(name + struct.pack("<I", len(body)) + body)
    file.write(b"data" + struct.pack("<I", min(size, UNKNOWN)))


def read(path: Path) -> np.ndarray:
    """A stereo float WAV (Demucs' `--float32`, or the worker's own), mapped from disk as (frames, channels)."""
    offset, frames = locate(path)
    return np.memmap(path, dtype="<f4", mode="r", offset=offset, shape=(frames, CHANNELS))


def locate(path: Path) -> tuple[int, int]:
    """Where a stereo float WAV's samples start, and how many frames it holds."""
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
                size = path.stat().st_size - offset if size == UNKNOWN else size
                return offset, size // FRAME_BYTES
            else:
                file.seek(size, 1)
            offset += size
