"""Test songs of any length: the project's synthesised rondo (data/generate.py), tiled and encoded block by block,
cached under bench/.cache/songs/."""

from __future__ import annotations

import functools
from pathlib import Path

import lameenc
import numpy as np
import sphn

from bench.config import CACHE
from data.generate import RATE, SONGS, render

RONDO = next(song for song in SONGS if song.name == "song-rondo")  # 20 s: four sources, as in data/song-rondo.mp3
FOLDER = CACHE / "songs"


def song(seconds: float, kbps: int = 128) -> Path:
    """An MP3 of `seconds` seconds at `kbps` (made once, then read from the cache)."""
    path = FOLDER / f"rondo-{seconds:g}s-{kbps}k.mp3"
    if not path.exists():
        FOLDER.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        _encode_tiled(seconds, kbps, partial)
        partial.rename(path)  # a run stopped half-way leaves no half song in the cache
    return path


def seconds_of(path: Path) -> float:
    """A song's length, decoded."""
    return float(sphn.durations([str(path)])[0])


def song_of_size(size_bytes: int, kbps: int = 320) -> Path:
    """An MP3 of about `size_bytes` (constant bitrate: the length follows from the size)."""
    return song(round(size_bytes * 8 / (kbps * 1000)), kbps)


def variant(mp3: bytes, label: str) -> bytes:
    """The same audio as a different upload (another songhash): an ID3v1 tag titled `label` at the end."""
    title = label.encode()[:30].ljust(30, b"\0")
    return mp3 + b"TAG" + title + bytes(30 + 30 + 4 + 30) + b"\xff"  # artist, album, year, comment; no genre


@functools.cache
def _rondo_mix() -> np.ndarray:
    return sum(render(RONDO).values())


def _encode_tiled(seconds: float, kbps: int, path: Path) -> None:
    """The rondo repeated to `seconds`, through one encoder, one rondo at a time: a 30 minute song never
    exists as float audio all at once."""
    mix = _rondo_mix()
    total = round(seconds * RATE)
    encoder = lameenc.Encoder()  # set up as data/generate.py's encode_mp3
    encoder.set_bit_rate(kbps)
    encoder.set_in_sample_rate(RATE)
    encoder.set_channels(2)
    encoder.set_quality(2)
    with open(path, "wb") as out:
        for start in range(0, total, len(mix)):
            block = mix[: min(len(mix), total - start)]
            out.write(encoder.encode((np.clip(block, -1, 1) * 32767).astype("<i2").tobytes()))
        out.write(encoder.flush())
