"""DOOR: what deciding a song costs where it is accepted (msaas/audio.py: ffmpeg decodes the whole file in a
subprocess). The decode alone, called as REST calls it, for a 4-minute song, a file that decodes to two hours in
7 MB (stopped a second past the limit) and a text file; then 4-minute songs posted to REST under gunicorn, with the
peak memory of its processes, without and with the decoders they start."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import lameenc
import numpy as np

from bench import songs
from bench.config import Plan
from bench.measure import PeakRss, descendants, idle_rss, rss
from bench.report import Check, Section, Table, mib, seconds
from bench.stack import Stack, upload
from msaas import audio
from msaas.errors import BadRequest

SONG_SECONDS = 240
POSTS = 6  # 4-minute songs posted to REST, one after the other
LIMIT = 3600.0  # MAX_SONG_SECONDS' default


def run(plan: Plan, scratch: Path) -> list[Section]:
    files = {
        "4-minute song (128 kbps)": songs.song(SONG_SECONDS),
        "2 hours at 8 kbit/s, 8 kHz (7 MB)": _hours_in_megabytes(scratch / "door-hours.mp3"),
        "a text file": _text(scratch / "door-text.mp3"),
    }
    rows = []
    for name, path in files.items():
        wall, own, ffmpeg, outcome = _decode(path)
        rows.append([name, seconds(wall), seconds(own), seconds(ffmpeg), outcome])
        print(f"DOOR {name}: {wall:.2f} s, CPU {own:.2f} s here and {ffmpeg:.2f} s in ffmpeg, {outcome}", flush=True)
    posted = _posts(plan, scratch)
    return [Section(
        "DOOR: deciding a song where it is accepted",
        [f"`msaas/audio.py`'s `measure` as REST calls it (limit {LIMIT:g} s), one call per file; then {POSTS} "
         f"distinct {SONG_SECONDS // 60}-minute songs POSTed raw to REST under gunicorn (2 processes), one at a time, "
         "no worker. CPU here: the calling process's (counting ffmpeg's output); in ffmpeg: the subprocess's."],
        [("The decode:", Table(["file", "wall", "CPU here", "CPU in ffmpeg", "outcome"], rows)),
         ("REST, posting 4-minute songs:", Table(["figure", "value"], posted))],
        [Check("4-minute song decoded at the door", rows[0][1]),
         Check("2 hours in 7 MB, stopped at the limit", rows[1][1])],
    )]


def _decode(path: Path) -> tuple[float, float, float, str]:
    """Wall seconds, CPU seconds of this process and of its children, and the outcome of deciding `path`."""
    before, started = os.times(), time.perf_counter()
    try:
        outcome = f"{audio.measure(str(path), LIMIT):.1f} s long"
    except BadRequest as refusal:
        outcome = f"{refusal.code}: {refusal.message}"
    after = os.times()
    own = after.user + after.system - before.user - before.system
    children = after.children_user + after.children_system - before.children_user - before.children_system
    return time.perf_counter() - started, own, children, outcome


def _posts(plan: Plan, scratch: Path) -> list[list[str]]:
    mp3 = songs.song(SONG_SECONDS).read_bytes()
    with Stack(scratch / "door", plan.model, workers=0) as stack:
        stack.post(upload(songs.variant(mp3, "door-warm-up"), raw=True)).raise_for_status()
        workers = descendants(stack.rest_pid)
        idle = idle_rss(stack.rest_pid, measure=lambda pid: _processes_rss(pid, workers))
        times = []
        with (PeakRss(stack.rest_pid, 0.02, lambda pid: _processes_rss(pid, workers)) as own,
              PeakRss(stack.rest_pid, 0.02) as tree):
            for index in range(POSTS):
                started = time.perf_counter()
                stack.post(upload(songs.variant(mp3, f"door-{index}"), raw=True)).raise_for_status()
                times.append(time.perf_counter() - started)
    return [
        ["POST of a 4-minute song (3.8 MB), median", seconds(statistics.median(times))],
        ["gunicorn's processes, idle (RSS, master and 2 workers)", mib(idle)],
        ["gunicorn's processes, peak while posting", mib(own.peak)],
        ["with the ffmpeg they start, peak", mib(tree.peak)],
    ]


def _processes_rss(master: int, workers: list[int]) -> int:
    return sum(rss(pid) for pid in [master, *workers])


def _hours_in_megabytes(path: Path) -> Path:
    """MP3s at the lowest rate, one after the other: two hours of audio in 7 MB (a "decompression bomb")."""
    if not path.exists():
        encoder = lameenc.Encoder()
        encoder.set_bit_rate(8)
        encoder.set_in_sample_rate(8000)
        encoder.set_channels(1)
        encoder.silence()
        noise = (np.random.default_rng(1).standard_normal(8000 * 600) * 1000).astype("<i2").tobytes()
        path.write_bytes((encoder.encode(noise) + encoder.flush()) * 12)
    return path


def _text(path: Path) -> Path:
    path.write_bytes(b"hello, I am a text file\n" * 40)
    return path

