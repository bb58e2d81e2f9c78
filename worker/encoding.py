"""From Demucs' stems to the files of the tracks a client gets: the level the song is separated at, and the
encoders.

Demucs hears the song `LEVEL` quieter (whole or in chunks) and writes float WAVs with `--clip-mode none`: it clamps
float output to ±1, and a stem may peak above full scale before the level is restored. A power of two scales
without rounding, and Demucs normalises its input by its standard deviation, so the level changes nothing else.
The tracks are then brought back, all by one gain, so that none clips (worker/mixdown.py).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import imageio_ffmpeg
import lameenc
import numpy as np

from msaas.audio import CHANNELS, SAMPLE_RATE
from worker import wav

LEVEL = 2.0**-8


def blocks_of(stem: np.ndarray) -> Iterator[np.ndarray]:
    for at in range(0, len(stem), wav.BLOCK):
        yield stem[at : at + wav.BLOCK]


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
            wav.write_header(self.file, frames, float_samples=False)

    def write(self, block: np.ndarray) -> np.ndarray:
        """Encode `block` (full scale ±1); the 16-bit samples encoded."""
        samples = (np.clip(block, -1, 1) * (2**15 - 1)).astype("<i2")  # Demucs' i16_pcm
        pcm = samples.tobytes()
        if self.lame:
            self.file.write(self.lame.encode(pcm))
        elif self.ffmpeg:
            self.ffmpeg.stdin.write(pcm)
        else:
            self.file.write(pcm)
        return samples

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
