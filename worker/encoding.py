"""From Demucs' stems to the files of the tracks a client gets: the level the song is separated at, the one rule
that keeps the tracks from clipping, and the encoders.

Demucs hears the song `LEVEL` quieter (whole or in chunks) and writes float WAVs with `--clip-mode none`: it clamps
float output to ±1, and a stem may peak above full scale before the level is restored. A power of two scales
without rounding, and Demucs normalises its input by its standard deviation, so the level changes nothing else.

The rule (`gain`): every track of a song is brought back by one gain, the song's own: 1 when the song peaks within
full scale, else 1 / (1.01 x its peak), as Demucs' `--clip-mode rescale` divides a track by 1.01 times its peak. It
depends on the song alone, known once it is decoded, before any stem exists: so a part of a track served while the
rest is separated is at the level of the whole, a range's tracks are the whole song's over that range, and the
stems of a song, summed, are the song at one level (none is rescaled differently from the others, as Demucs' rule
did stem by stem). Where a stem still goes past full scale (it is louder than the song there: the other stems
cancel it), it is clipped, as Demucs' `--clip-mode clamp` does, and the worker logs how many samples were.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

import imageio_ffmpeg
import lameenc
import numpy as np

from msaas.audio import CHANNELS, SAMPLE_RATE
from worker import wav

LEVEL = 2.0**-8


def gain(song_peak: float) -> float:
    """The gain of every track of a song that peaks at `song_peak` (full scale 1): see the module's doc."""
    return 1 / max(1.01 * song_peak, 1.0)


def blocks_of(stem: np.ndarray) -> Iterator[np.ndarray]:
    for at in range(0, len(stem), wav.BLOCK):
        yield stem[at : at + wav.BLOCK]


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


def write_track(blocks: Iterable[np.ndarray], frames: int, path: Path, kind: str, mp3_bitrate: int,
                track_gain: float) -> int:
    """Write the track of `frames` frames whose `blocks` (at `LEVEL`) are given to `path`, as `kind`, brought back
    by `track_gain` (`gain`); the samples clipped."""
    scale = np.float32(track_gain / LEVEL)
    with Encoder(path, kind, frames, mp3_bitrate) as encoder:
        for block in blocks:
            encoder.write(block * scale)
    return encoder.clipped


class Encoder:
    """Writes 16-bit audio as Demucs' `save_audio` does, a block at a time: MP3 (lameenc, quality 2),
    WAV, or FLAC (through ffmpeg)."""

    def __init__(self, path: Path, kind: str, frames: int, mp3_bitrate: int) -> None:
        self.kind = kind
        self.clipped = 0  # samples past full scale, clipped
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

    def write(self, block: np.ndarray) -> None:
        self.clipped += int(np.count_nonzero(np.abs(block) > 1))
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
