"""Long songs in chunks (worker/chunks.py): the plan, the files, and clean seams with the real Demucs CLI."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from pathlib import Path

import imageio_ffmpeg
import lameenc
import numpy as np
import pytest
import requests
import sphn

from devstack import random_models
from msaas import audio
from msaas.models import FOUR_STEMS
from msaas.naming import songhash_of
from msaas.options import Options
from msaas.settings import Settings
from support import ROOT, start_service, wait_for
from worker import chunks, demucs_run, encoding, wav
from worker.demucs_run import DemucsConfig, DemucsRun, Progress
from worker.separation import Hooks, SeparationConfig, separate, separation_cpus

RATE = chunks.SAMPLE_RATE
HTDEMUCS_GRID = chunks.segment_grid("htdemucs", None)


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory) -> Path:
    """Seeded random-weight checkpoints: `htdemucs` (the real architecture) and `tiny`."""
    return random_models.write(tmp_path_factory.mktemp("models"))


def song(seconds: float, path: Path) -> Path:
    """An MP3 of the rondo sample, looped to `seconds` under a slow swell so no two chunks hold the same."""
    audio, rate = sphn.read(str(ROOT / "data" / "song-rondo.mp3"))
    frames = int(seconds * rate)
    looped = np.tile(audio, -(-frames // audio.shape[1]))[:, :frames] * np.linspace(0.6, 1, frames)
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(192)
    encoder.set_in_sample_rate(rate)
    encoder.set_channels(2)
    encoder.silence()
    pcm = (np.clip(looped.T, -1, 1) * 32767).astype("<i2").tobytes()
    path.write_bytes(encoder.encode(pcm) + encoder.flush())
    return path


def signal_to_difference(reference: np.ndarray, other: np.ndarray) -> float:
    return float(10 * np.log10((reference**2).sum() / ((reference - other) ** 2).sum()))


@pytest.mark.parametrize("frames", [1, RATE * 60, RATE * 121])
def test_a_song_no_longer_than_a_chunk_is_one_chunk(frames):
    assert chunks.plan(frames, RATE * 121, RATE * 10, HTDEMUCS_GRID) == [chunks.Chunk(0, frames)]
    assert chunks.plan(frames, 0, RATE * 10) == [chunks.Chunk(0, frames)]


@pytest.mark.parametrize(("minutes", "chunk_minutes"), [(2.5, 1), (10, 1), (30, 7), (61, 12)])
def test_chunks_cover_the_song_on_demucs_grid_with_room_for_the_crossfade(minutes, chunk_minutes):
    frames = int(minutes * 60 * RATE) + 12345
    segment, stride = HTDEMUCS_GRID
    chunk, overlap = int(chunk_minutes * 60 * RATE), int(Settings().chunk_overlap_seconds * RATE)
    plan = chunks.plan(frames, chunk, overlap, HTDEMUCS_GRID)
    assert len(plan) > 1
    assert plan[0].start == 0 and plan[-1].end == frames
    for before, after in zip(plan, plan[1:], strict=False):
        assert after.start % stride == 0  # Demucs' segments fall where they fall in the whole song
        assert (before.end - before.start) % stride == segment - stride  # ...and end with a whole segment
        assert before.end - after.start >= overlap
        first, last = after.fade_in
        # Clear of the quarter segment at each chunk edge where Demucs' cross-weighting differs.
        assert after.start + (segment - stride) <= first < last <= before.end - (segment - stride)
    assert max(part.end - part.start for part in plan) <= chunk + stride  # memory bound by the chunk length
    assert sum(part.end - part.start for part in plan) <= 1.16 * frames  # what the overlaps cost


def test_unknown_models_get_plain_overlapping_chunks():
    plan = chunks.plan(RATE * 100, RATE * 30, RATE * 8, chunks.segment_grid("someone/else", None))
    assert [(chunk.start, chunk.end) for chunk in plan] == [
        (0, RATE * 30), (RATE * 22, RATE * 52), (RATE * 44, RATE * 74), (RATE * 66, RATE * 96), (RATE * 88, RATE * 100)
    ]
    assert plan[1].fade_in == (RATE * 22, RATE * 30)
    assert chunks.segment_grid("someone/else", 4) == (RATE * 4, RATE * 3)


def test_join_gives_back_the_song_and_maps_two_chunks_at_most(tmp_path):
    """Chunks whose "stem" is the chunk itself join into the song; the worker's memory must not grow with the
    number of chunks, and mapped files count in it."""
    song = np.random.default_rng(1).uniform(-0.5, 0.5, (RATE * 12, 2)).astype(np.float32)
    with wav.SongWriter(tmp_path / "song.wav", encoding.LEVEL) as writer:  # as the worker decodes a song
        writer.write(memoryview(song.tobytes()))
    plan = chunks.plan(len(song), RATE * 2, RATE // 2)
    stems = chunks.write_inputs(tmp_path / "song.wav", plan, tmp_path)
    blocks, mapped = [], 0
    for block in chunks.joined(stems, plan):
        blocks.append(np.array(block))  # a copy: a view would keep its chunk mapped
        mapped = max(mapped, Path("/proc/self/maps").read_text().count(f"{tmp_path}/chunk-"))
    assert len(plan) >= 6 and 1 <= mapped <= 2
    assert np.allclose(np.concatenate(blocks) / encoding.LEVEL, song, atol=1e-6)


def test_float_wavs_read_back_as_written(tmp_path):
    audio = np.random.default_rng(1).uniform(-3, 3, (1000, 2)).astype("<f4")
    with open(tmp_path / "a.wav", "wb") as file:
        wav.write_header(file, len(audio), float_samples=True)
        file.write(audio.tobytes())
    assert np.array_equal(wav.read(tmp_path / "a.wav"), audio)
    decoded, rate = sphn.read(str(tmp_path / "a.wav"))  # Demucs reads its input with sphn
    assert rate == RATE and np.array_equal(decoded.T, audio)


def test_progress_counts_every_pass_and_never_goes_back(tmp_path):
    """Demucs draws a bar per pass over the song (per random shift, per model of a bag): three passes are done at
    the third bar's 100%, and the progress read as the output grows only grows, whatever a bar starts again at."""
    log = tmp_path / "demucs.log"
    log.write_bytes(b"Separating track /x/chunk-001.wav\n")
    progress = Progress(log, passes=3)
    assert progress.read() is None
    seen = []
    for piece in (b"\r 50%|##   | 1/2\r10", b"0%|#####| 2/2\r 40%|##   | 1/2", b"\r100%|###| 2/2\r  0%|  | 0/2",
                  b"\r 90%|#### | 1.8/2\r100%|#####| 2/2\n"):
        with open(log, "ab") as output:
            output.write(piece)
        seen.append(round(progress.read(), 1))
    assert seen == [16.7, 46.7, 66.7, 100.0]  # a percentage cut in two by a read ("10" "0%") is read whole
    assert seen == sorted(seen)


def test_a_separation_uses_the_cpus_the_worker_may_use(tmp_path):
    assert separation_cpus(3, {"OMP_NUM_THREADS": "8"}) == 3
    assert separation_cpus(0, {"OMP_NUM_THREADS": "2"}) == 2
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # a pod limited to 1.5 CPUs (cgroup v2)
    assert separation_cpus(0, {}, cgroup=tmp_path) == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert separation_cpus(0, {}, cgroup=tmp_path) == len(os.sched_getaffinity(0))


@pytest.mark.demucs
@pytest.mark.timeout(900)  # htdemucs separates 32 s of song about three times: minutes on 2 busy cores
@pytest.mark.parametrize(
    ("model", "segment", "seconds", "chunk", "overlap"),
    [("tiny", 4, 30, 16, 5), ("htdemucs", None, 32, 20, 8)],
)
def test_chunked_separation_matches_the_whole_song_within_60_db(
    model_repo, tmp_path, model, segment, seconds, chunk, overlap
):
    """The real CLI twice on one song, whole and in chunks; Demucs' random shifts off, so only seams differ."""
    mp3 = song(seconds, tmp_path / "song.mp3")
    demucs = DemucsConfig(segment=segment, repo=model_repo)
    outputs, progress = {}, []
    for name, chunk_seconds in (("whole", 0), ("chunked", chunk)):
        options = Options.resolve({"format": "wav", "shifts": 0}, model)
        run = DemucsRun(model, mp3, tmp_path / name / "separated", options)
        outputs[name], measured, *_ = separate(
            run, FOUR_STEMS,
            SeparationConfig(demucs, cpus=2, chunk_seconds=chunk_seconds, chunk_overlap_seconds=overlap),
            tmp_path / f"{name}.log", Hooks(report=progress.append if name == "chunked" else lambda percent: None),
        )
        assert round(measured * RATE) == round(audio.measure(str(mp3), 3600) * RATE)  # one length: the door's
    parts = len(list((tmp_path / "chunked" / "separated" / model).glob("chunk-*")))
    assert parts >= 2
    # One Demucs process per chunk, so none holds two chunks' stems at once; progress runs across them.
    assert (tmp_path / "chunked.log").read_text().count("Separating track") == 1
    assert progress == sorted(progress) and all(0 <= percent <= 100 for percent in progress)
    if model == "htdemucs":  # each chunk takes long enough to be reported while it runs
        assert max(progress) > 100 * (parts - 1) / parts
    for track in FOUR_STEMS:
        whole, _ = sphn.read(str(outputs["whole"][track]))
        joined, _ = sphn.read(str(outputs["chunked"][track]))
        assert joined.shape == whole.shape
        difference = signal_to_difference(whole, joined)
        print(f"{model} {track}: {difference:.1f} dB")  # the figure bench/RESULTS.md quotes (pytest -s)
        assert difference >= 60, track


@pytest.mark.demucs
def test_worker_separates_a_long_song_in_chunks_into_mp3_tracks(settings, rest, store, tmp_path):
    """Through the stack: chunks of 5 s (2 s Demucs segments) of the 8 s sample, joined and encoded as MP3."""
    mp3 = (ROOT / "data" / "short-march.mp3").read_bytes()
    worker = start_service("worker", settings, tmp_path / "worker.log", CHUNK_SECONDS="5",
                           CHUNK_OVERLAP_SECONDS="2", DEMUCS_SEGMENT="2")
    try:
        answer = requests.post(f"http://{rest}/apiv1/separate", json={"mp3": base64.b64encode(mp3).decode()})
        assert answer.status_code == 200
        songhash = songhash_of(mp3)
        wait_for(lambda: requests.get(f"http://{rest}/apiv1/status/{songhash}").json()["state"] == "done", 120,
                 "four tracks")
    finally:
        worker.stop()
    original, _ = sphn.read(str(ROOT / "data" / "short-march.mp3"))
    for track in FOUR_STEMS:
        (tmp_path / "track.mp3").write_bytes(requests.get(f"http://{rest}/apiv1/track/{songhash}/{track}.mp3").content)
        decoded, rate = sphn.read(str(tmp_path / "track.mp3"))
        assert rate == RATE
        assert abs(decoded.shape[1] - original.shape[1]) <= 2 * 1152  # MP3 frames of padding at most
        assert np.abs(decoded).max() > 1e-3  # sound, not silence
    assert int(re.search(r"separating in (\d+) chunks", (tmp_path / "worker.log").read_text())[1]) >= 2


def test_the_ffmpeg_demucs_finds_is_this_installations_even_after_a_link_went_stale(tmp_path):
    """Demucs writes FLAC through `ffmpeg` on its PATH; a link left behind by a removed installation (as a shared
    temp folder keeps them) must be replaced, or every FLAC job fails with "requires ffmpeg to be installed"."""
    folder = demucs_run.ffmpeg_dir()
    link = folder / "ffmpeg"
    assert link.resolve() == Path(imageio_ffmpeg.get_ffmpeg_exe()).resolve()
    link.unlink()
    link.symlink_to(tmp_path / "removed-installation" / "ffmpeg")  # dangling
    assert demucs_run.ffmpeg_dir() == folder
    assert link.resolve() == Path(imageio_ffmpeg.get_ffmpeg_exe()).resolve()
    assert subprocess.run([str(link), "-version"], capture_output=True).returncode == 0
