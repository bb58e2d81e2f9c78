"""Which part of a song a preview separates, when the client does not say: its loudest `PREVIEW_SECONDS`.

A separation is judged where every instrument plays at once, the chorus or the drop, and that is where a song is
loudest; its first 30 s are often an intro (sparse, quiet, or a fade-in) that would show little. The door decodes
every frame of a song anyway to measure it (msaas/audio.py); `Loudness` hears them on the way, a sum of squares per
second, so choosing costs nothing more. The choice depends on the song alone, so every tenant's preview of a song
is the same result. It is kept by songhash (`preview:<songhash>`), so a preview asked for again, or its status and
tracks, are found without decoding the song again.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import redis

from msaas.audio import CHANNELS, SAMPLE_RATE
from msaas.options import PREVIEW_SECONDS, Options, text


def preview_key(songhash: str) -> str:
    return f"preview:{songhash}"


class Loudness:
    """A decode's sink: the energy of each whole second of the song."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.partial = 0.0  # the energy of the second being decoded
        self.frames = 0  # frames of that second heard so far

    def __call__(self, samples: memoryview) -> None:
        power = np.square(np.frombuffer(samples, dtype="<f4"), dtype=np.float64).reshape(-1, CHANNELS).sum(axis=1)
        at = 0
        while at < len(power):
            take = min(len(power) - at, SAMPLE_RATE - self.frames)
            self.partial += float(power[at:at + take].sum())
            self.frames += take
            at += take
            if self.frames == SAMPLE_RATE:
                self.seconds.append(self.partial)
                self.partial, self.frames = 0.0, 0

    def loudest(self, length: float, song_seconds: float) -> tuple[float, float | None]:
        """(start, end) of the loudest `length` whole seconds; the whole song (0, None) if it is no longer."""
        if song_seconds <= length:
            return 0.0, None
        width = int(length)
        energy = np.concatenate([[0.0], np.cumsum(self.seconds)])
        windows = energy[width:] - energy[:-width] if len(self.seconds) >= width else np.zeros(1)
        start = float(np.argmax(windows))  # the first of the loudest, if several tie
        return start, min(start + length, song_seconds)


class Previews:
    """Where each song's preview lies, once chosen."""

    def __init__(self, connection: redis.Redis) -> None:
        self.redis = connection

    @staticmethod
    def to_choose(options: Options) -> bool:
        """A preview whose range the service chooses (the client named none)."""
        return options.preview and options.end is None

    def known(self, songhash: str, options: Options) -> Options | None:
        """The options with the preview's range made concrete, as chosen for the song before; None if it never was
        (options that need no choosing come back as they are)."""
        if not self.to_choose(options):
            return options
        chosen = self.redis.get(preview_key(songhash))
        if chosen is None:
            return None
        start, _, end = chosen.partition(",")
        return replace(options, start=float(start), end=float(end) if end else None)

    def choose(self, songhash: str, options: Options, loudness: Loudness, seconds: float) -> Options:
        """The options with the preview's range chosen for a song of `seconds` (its loudest), and kept for it."""
        start, end = loudness.loudest(PREVIEW_SECONDS, seconds)
        self.redis.set(preview_key(songhash), f"{text(start)},{'' if end is None else text(end)}")
        return replace(options, start=start, end=end)

    def forget(self, songhash: str) -> None:
        self.redis.delete(preview_key(songhash))
