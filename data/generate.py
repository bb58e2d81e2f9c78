"""Synthesise the bundled sample songs and their ground-truth stems.

Every sample is a real mix of four distinct sources: a sung vowel melody (vocals), a drum pattern (drums),
a bass line (bass) and sustained chords (other). The mix is exactly the sum of the stems, so the stems can
serve as ground truth for quality checks. Run `python data/generate.py` to rewrite them; the output is
deterministic. Nothing here is recorded music.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import lameenc
import numpy as np

RATE = 44100
TRACKS = ("vocals", "drums", "bass", "other")
HERE = Path(__file__).resolve().parent

# Formant centres (Hz) of sung vowels; the voice alternates between them.
VOWELS = {"a": (800, 1150, 2900), "o": (450, 800, 2830), "e": (400, 2100, 2800)}


@dataclass(frozen=True)
class Song:
    name: str
    seconds: float
    bpm: float
    root_midi: int  # key of the song
    melody: tuple[int, ...]  # scale degrees (semitones above root), one per beat
    chords: tuple[int, ...]  # chord roots (semitones above root), one per bar
    seed: int


SONGS = (
    Song("short-hum", 8.0, 120, 57, (12, 15, 19, 17, 15, 12, 10, 12), (0, 5, 7, 0), 1),
    Song("short-march", 8.0, 100, 55, (7, 9, 11, 12, 11, 9, 7, 4), (0, 7, 5, 0), 2),
    Song("song-rondo", 20.0, 110, 60, (12, 16, 19, 16, 17, 14, 12, 11), (0, 9, 5, 7), 3),
)


def hz(midi: float) -> np.ndarray | float:
    return 440.0 * 2 ** ((np.asarray(midi) - 69) / 12)


def envelope(n: int, attack: float, decay: float) -> np.ndarray:
    t = np.arange(n) / RATE
    return np.minimum(1.0, t / max(attack, 1e-4)) * np.exp(-t / decay)


def vocals(song: Song, t: np.ndarray) -> np.ndarray:
    beat = 60.0 / song.bpm
    index = (t // beat).astype(int)
    midi = song.root_midi + np.asarray(song.melody)[index % len(song.melody)]
    f0 = hz(midi) * (1 + 0.012 * np.sin(2 * np.pi * 5.5 * t))  # vibrato
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    formants = np.array(list(VOWELS.values()))[index % len(VOWELS)]  # (n, 3)
    voice = np.zeros_like(t)
    for harmonic in range(1, 40):
        freq = harmonic * f0
        gain = sum(np.exp(-(((freq - formants[:, k]) / 120.0) ** 2)) for k in range(3)) + 0.05
        voice += gain * np.sin(harmonic * phase) / harmonic**0.5
    # each note swells in and out, with a breath between notes
    note_pos = (t % beat) / beat
    voice *= np.sin(np.pi * np.clip(note_pos / 0.9, 0, 1)) ** 0.5
    return voice / np.abs(voice).max()


def drums(song: Song, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    beat = 60.0 / song.bpm
    out = np.zeros_like(t)
    hit = int(0.4 * RATE)
    ht = np.arange(hit) / RATE
    kick = np.sin(2 * np.pi * np.cumsum(50 + 90 * np.exp(-ht / 0.03)) / RATE) * envelope(hit, 0.001, 0.12)
    snare = (0.6 * rng.standard_normal(hit) + np.sin(2 * np.pi * 185 * ht)) * envelope(hit, 0.001, 0.07)
    hat = np.diff(rng.standard_normal(hit + 1)) * envelope(hit, 0.0005, 0.02)
    for i in range(int(song.seconds / beat * 2)):  # eighth notes
        start = int(i * beat / 2 * RATE)
        end = min(start + hit, len(t))
        if i % 4 == 0:
            out[start:end] += kick[: end - start]
        if i % 4 == 2:
            out[start:end] += 0.7 * snare[: end - start]
        out[start:end] += 0.25 * hat[: end - start]
    return out / np.abs(out).max()


def bass(song: Song, t: np.ndarray) -> np.ndarray:
    beat = 60.0 / song.bpm
    bar = (t // (4 * beat)).astype(int)
    midi = song.root_midi - 24 + np.asarray(song.chords)[bar % len(song.chords)]
    midi = midi + np.where((t // beat).astype(int) % 4 == 3, 7, 0)  # walk up a fifth on beat four
    phase = 2 * np.pi * np.cumsum(hz(midi)) / RATE
    tone = sum(np.sin(k * phase) / k for k in range(1, 6))
    pluck = np.exp(-((t % beat) / 0.25))
    return tone * pluck / np.abs(tone * pluck).max()


def chords(song: Song, t: np.ndarray) -> np.ndarray:
    bar_len = 4 * 60.0 / song.bpm
    bar = (t // bar_len).astype(int)
    root = song.root_midi + np.asarray(song.chords)[bar % len(song.chords)]
    pad = np.zeros_like(t)
    for interval in (0, 3, 7, 12):
        phase = 2 * np.pi * np.cumsum(hz(root + interval)) / RATE
        pad += np.sin(phase) + 0.3 * np.sin(3 * phase)
    swell = np.sin(np.pi * (t % bar_len) / bar_len) ** 0.3
    return pad * swell / np.abs(pad * swell).max()


def stereo(mono: np.ndarray, pan: float) -> np.ndarray:
    """Equal-power pan: -1 is left, +1 is right."""
    angle = (pan + 1) * np.pi / 4
    return np.stack([mono * np.cos(angle), mono * np.sin(angle)], axis=1)


def render(song: Song) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(song.seed)
    t = np.arange(int(song.seconds * RATE)) / RATE
    stems = {
        "vocals": stereo(0.55 * vocals(song, t), 0.0),
        "drums": stereo(0.6 * drums(song, t, rng), 0.15),
        "bass": stereo(0.6 * bass(song, t), 0.0),
        "other": stereo(0.3 * chords(song, t), -0.35),
    }
    peak = np.abs(sum(stems.values())).max()
    return {name: stem * (0.89 / peak) for name, stem in stems.items()}  # mix peaks at -1 dBFS


def encode_mp3(audio: np.ndarray, kbps: int) -> bytes:
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(kbps)
    encoder.set_in_sample_rate(RATE)
    encoder.set_channels(2)
    encoder.set_quality(2)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    return bytes(encoder.encode(pcm.tobytes()) + encoder.flush())


def write_song(song: Song, folder: Path) -> Path:
    stems = render(song)
    mix_path = folder / f"{song.name}.mp3"
    mix_path.write_bytes(encode_mp3(sum(stems.values()), 128))
    stem_folder = folder / "stems" / song.name
    stem_folder.mkdir(parents=True, exist_ok=True)
    for track in TRACKS:
        (stem_folder / f"{track}.mp3").write_bytes(encode_mp3(stems[track], 64))
    return mix_path


def main(folder: Path = HERE) -> None:
    for song in SONGS:
        print(write_song(song, folder))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
