"""The worker's tracks from stems (worker/mixdown.py): one gain for every track, the residual that makes them sum to
the song, the reconstruction figure, and the waveforms; with ffmpeg decoding the song, no servers."""

from __future__ import annotations

import json
from pathlib import Path

import lameenc
import numpy as np
import pytest

from msaas import audio
from msaas.options import Options
from worker import chunks, encoding, mixdown, wav

RATE = audio.SAMPLE_RATE
STEMS = ("vocals", "drums", "bass", "other")


def an_mp3(path: Path, seconds: float = 3.0) -> np.ndarray:
    """A song of tones and noise at `path`, and the frames it decodes to (as the worker decodes it)."""
    time = np.arange(int(seconds * RATE)) / RATE
    left = 0.3 * np.sin(2 * np.pi * 220 * time) + 0.05 * np.random.default_rng(1).standard_normal(len(time))
    song = np.stack([left, 0.4 * np.sin(2 * np.pi * 330 * time)], axis=1)
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(192)
    encoder.set_in_sample_rate(RATE)
    encoder.set_channels(2)
    encoder.set_quality(2)
    path.write_bytes(encoder.encode((song * 32767).astype("<i2").tobytes()) + encoder.flush())
    frames: list[bytes] = []
    audio.decode(str(path), 0, lambda block: frames.append(bytes(block)))
    return np.frombuffer(b"".join(frames), dtype="<f4").reshape(-1, 2)


def stems_of(song: np.ndarray, loudest: float = 1.0) -> dict[str, np.ndarray]:
    """Four "stems" that sum to the song but for a little noise (as a model's do), two of them holding a tone that
    cancels in the sum, loud enough for the loudest stem to peak at `loudest`."""
    noise = np.random.default_rng(2).uniform(-0.01, 0.01, song.shape)
    tone = np.sin(2 * np.pi * 50 * np.arange(len(song)) / RATE)[:, None] * np.ones((1, 2))
    tone *= (loudest - np.abs(song * 0.5).max()) / np.abs(tone).max()
    stems = {"vocals": song * 0.5 + tone, "drums": song * 0.3 - tone + noise, "bass": song * 0.1, "other": song * 0.1}
    return {name: stem.astype(np.float32) for name, stem in stems.items()}


def written(stems: dict[str, np.ndarray], folder: Path, grid: list[chunks.Chunk]) -> dict[str, list[Path]]:
    """The stems as Demucs leaves them, at the level it hears the song: one float WAV each, or one per chunk."""
    folder.mkdir()
    paths: dict[str, list[Path]] = {}
    for name, stem in stems.items():
        paths[name] = []
        for index, chunk in enumerate(grid):
            path = folder / f"{name}-{index}.wav"
            with open(path, "wb") as file:
                wav.write_header(file, chunk.end - chunk.start, float_samples=True)
                file.write((stem[chunk.start:chunk.end] * encoding.LEVEL).astype("<f4").tobytes())
            paths[name].append(path)
    return paths


def read16(path: Path) -> np.ndarray:
    """A 16-bit WAV track as a reader decodes it (n / 32768)."""
    data = path.read_bytes()
    start = data.index(b"data") + 8
    return np.frombuffer(data[start:], dtype="<i2").reshape(-1, 2) / 32768


def db(reference: np.ndarray, other: np.ndarray) -> float:
    difference = reference.astype(np.float64) - other
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / np.sum(difference**2)))


@pytest.mark.parametrize("chunked", [False, True])
def test_the_residual_makes_float32_tracks_sum_to_the_song(tmp_path, chunked):
    song = an_mp3(tmp_path / "song.mp3")
    stems = stems_of(song)
    grid = chunks.plan(len(song), RATE, RATE // 4) if chunked else [chunks.Chunk(0, len(song))]
    assert (len(grid) > 1) == chunked
    options = Options.resolve({"format": "wav", "sample_format": "float32", "residual": 1}, "htdemucs")
    done = mixdown.write_tracks(written(stems, tmp_path / "stems", grid), grid, tmp_path / "joined", options, 2,
                                tmp_path / "song.mp3", 60)
    tracks = {name: np.array(wav.read(path)) for name, path in done.tracks.items()}
    assert set(tracks) == {*STEMS, "residual"} and done.gain == 1
    for name in STEMS:  # float32: every stem as separated, nothing rescaled (the joined ones crossfade themselves)
        assert np.allclose(tracks[name], stems[name], atol=1e-6), name
    assert db(song, sum(tracks.values())) >= 90 and done.reconstruction_db >= 90
    assert db(song, sum(tracks[name] for name in STEMS)) < 60  # without the residual they do not sum to the song
    assert not (tmp_path / "joined" / "song.wav").exists()  # the song decoded again, then removed


def test_16_bit_tracks_are_all_lowered_by_one_gain_when_any_would_clip(tmp_path):
    song = an_mp3(tmp_path / "song.mp3")
    grid = [chunks.Chunk(0, len(song))]
    options = Options.resolve({"format": "wav"}, "htdemucs")
    for loudest in (0.9, 2.0):
        stems = stems_of(song, loudest)
        peak = max(float(np.abs(stem).max()) for stem in stems.values())
        gain = 1 / max(1.01 * peak, 1)  # Demucs' rescale rule, once for all the tracks
        assert (gain == 1) == (loudest < 1)
        folder = tmp_path / f"{loudest}"
        folder.mkdir()
        done = mixdown.write_tracks(written(stems, folder / "stems", grid), grid, folder / "joined", options, 2,
                                    tmp_path / "song.mp3", 60)
        assert done.gain == pytest.approx(gain)
        for name in STEMS:  # the same gain for each, so they keep summing to the song, at its level times the gain
            assert np.abs(read16(done.tracks[name]) - stems[name] * gain).max() <= 2 / 32768, name
        assert max(np.abs(read16(done.tracks[name])).max() for name in STEMS) <= 1 / 1.01 + 1e-4
        # What is left out is the model's (the noise) and 16-bit rounding: measured at the tracks' level.
        assert 30 < done.reconstruction_db < 60


def test_waveforms_are_each_span_lowest_and_highest_sample_in_under_20_kb(tmp_path):
    frames = 2000 * 64 + 37
    loud = np.where(np.arange(frames) % 2, 1.0, -1.0)[:, None] * np.array([[1.0, 0.5]])  # worst case: ±full scale
    waveform = mixdown.Waveform(frames)
    for at in range(0, frames, 5000):  # blocks that cut spans anywhere
        waveform.add(loud[at:at + 5000])
    data = json.dumps(waveform.as_json("drums"), separators=(",", ":"))
    assert len(data.encode()) <= 20_000
    shape = json.loads(data)
    assert shape["buckets"] == 2000 and len(shape["min"]) == len(shape["max"]) == 2000
    assert set(shape["min"]) == {-127} and set(shape["max"]) == {127}
    rising = np.linspace(0.1, 0.9, 4000)
    ramp = mixdown.Waveform(4000, buckets=4)
    ramp.add(rising[:, None].repeat(2, axis=1))
    assert ramp.as_json("x")["max"] == [round(rising[span * 1000 + 999] * 127) for span in range(4)]
    assert ramp.as_json("x")["min"] == [0, 0, 0, 0]  # every span spans 0, so the page draws from the middle
    short = mixdown.Waveform(3)  # fewer frames than spans: a span each
    short.add(np.array([[0.5, -0.5], [0.0, 0.0], [1.5, 0.0]]))
    assert short.as_json("x")["max"] == [64, 0, 127] and short.as_json("x")["buckets"] == 3


def test_blocks_cut_anywhere_come_back_in_blocks_of_one_size():
    pieces = [np.arange(n * 2).reshape(n, 2) for n in (3, 7, 1, 12, 5)]
    aligned = list(mixdown._aligned(pieces, 4))
    assert [len(block) for block in aligned] == [4, 4, 4, 4, 4, 4, 4]
    assert np.array_equal(np.concatenate(aligned), np.concatenate(pieces))


def test_reconstruction_is_reported_within_bounds():
    assert mixdown.reconstruction_db(1.0, 0.0) == mixdown.EXACT_DB
    assert mixdown.reconstruction_db(1.0, 1e-9) == 90.0
    assert mixdown.reconstruction_db(0.0, 1.0) == -mixdown.EXACT_DB
    assert mixdown.reconstruction_db(1.0, 1e-30) == mixdown.EXACT_DB
