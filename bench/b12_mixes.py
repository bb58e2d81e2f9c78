"""MIXES (issue 24): what a mix rendered by the service costs against the separation it is made from, on a 4 minute
song, and how much waveform data a track's waveform route serves."""

from __future__ import annotations

import re
import statistics
import time
from pathlib import Path

import requests

from bench import songs
from bench.config import Plan
from bench.measure import cpu_seconds
from bench.report import Check, Section, Table, seconds
from bench.stack import Callbacks, Stack
from msaas.naming import songhash_of

TITLE = "MIXES: a 4 minute song's mix rendered by the service, against its separation; waveform data per track"
SONG_SECONDS = 240
TARGET_SHARE = 0.02  # the issue's: a mix render within 2% of the separation's time
TARGET_WAVEFORM_BYTES = 20_000
RENDERS = 3  # per recipe, each a recipe of its own (a gain a hundredth of a dB apart), so each is rendered
RECIPES = {  # the first is the default mix the check is made on
    "instrumental, MP3 320 kbit/s (the default)": {"preset": "instrumental"},
    "instrumental, 16-bit WAV": {"preset": "instrumental", "format": "wav"},
    "every track, drums -6 dB, FLAC": {"gains": {"drums": -6}, "format": "flac"},
}


def run(plan: Plan, scratch: Path) -> list[Section]:
    mp3 = songs.song(SONG_SECONDS).read_bytes()
    songhash = songhash_of(mp3)
    renders: dict[str, list[tuple[float, str]]] = {name: [] for name in RECIPES}  # (request seconds, digest)
    cached: dict[str, float] = {}
    stack = Stack(scratch / "mixes", plan.model, worker_env=plan.worker_env(plan.cores))
    with Callbacks() as callbacks, stack:
        worker_before = cpu_seconds(stack.worker_pid(0))
        separation = stack.separate(callbacks, mp3).seconds
        # Demucs (the worker's children, as usage counts them) and the worker's own threads (decoding, encoding).
        worker_own = cpu_seconds(stack.worker_pid(0)) - worker_before
        separation_cpu = requests.get(f"{stack.url}/apiv1/usage", timeout=30).json()["cpu_seconds"] + worker_own
        print(f"MIXES: {SONG_SECONDS} s song separated in {seconds(separation)}, {separation_cpu:.0f} CPU s",
              flush=True)
        for name, recipe in RECIPES.items():
            for rep in range(RENDERS):
                varied = {**recipe, "gains": {**recipe.get("gains", {}), "bass": -0.01 * rep}}
                took, cache, digest = _mix(stack.url, songhash, varied)
                assert cache == "miss", f"{name}: a fresh recipe answered {cache}"
                renders[name].append((took, digest))
            cached[name], cache, _ = _mix(stack.url, songhash, {**recipe, "gains": {**recipe.get("gains", {}),
                                                                                    "bass": 0.0}})
            assert cache == "hit"
            print(f"MIXES {name}: {', '.join(seconds(took) for took, _ in renders[name])} rendered, "
                  f"{seconds(cached[name])} stored", flush=True)
        sizes = {track: len(requests.get(f"{stack.url}/apiv1/waveform/{songhash}/{track}", timeout=30).content)
                 for track in stack.tracks}
        logged = _logged_renders((stack.folder / "rest.log").read_text())
    rows, shares = [], {}
    for name, runs in renders.items():
        request = statistics.median(took for took, _ in runs)
        render = statistics.median(logged[digest][0] for _, digest in runs)
        cpu = statistics.median(logged[digest][1] for _, digest in runs)
        shares[name] = (request / separation, cpu / separation_cpu)
        rows.append([name, seconds(request), seconds(render), f"{cpu:.2f}", seconds(cached[name]),
                     f"{shares[name][0]:.2%}", f"{shares[name][1]:.2%}"])
    default = next(iter(RECIPES))
    largest = max(sizes.values())
    return [Section(
        TITLE,
        [f"A {SONG_SECONDS} s song (the rondo tiled, 128 kbit/s MP3) through the service as `make run` starts it "
         f"(gunicorn REST, one worker on {plan.cores} CPUs), separated once into MP3 tracks (POST to the 4th track "
         f"downloadable: {seconds(separation)}; {separation_cpu:.0f} CPU s, Demucs' and the worker's own), "
         f"then mixed: each recipe {RENDERS} times, each time a recipe of its own (the bass a hundredth of a dB "
         "apart), so each is rendered (`X-Mix-Cache: miss`): POST /apiv1/mix until the whole mix is downloaded. "
         "Then once more an identical one: stored (`hit`). One ffmpeg per render (one thread for its filters and "
         "encoder), reading the tracks from the store; its wall and CPU time from REST's log line. The CPU "
         "shares hold when the machine is shared; the wall ones only when both sides meet the same load."],
        [("Renders (medians):", Table(["recipe", "request", "render", "render CPU s", "stored (hit)",
                                       "request / separation", "CPU / separation CPU"], rows)),
         ("Waveform data per track (GET /apiv1/waveform):", Table(
             ["track", "bytes"], [[track, str(size)] for track, size in sizes.items()]))],
        [Check(f"mix render / separation, wall ({default})", f"{shares[default][0]:.2%}", f"≤ {TARGET_SHARE:.0%}",
               shares[default][0] <= TARGET_SHARE),
         Check(f"mix render / separation, CPU seconds ({default})", f"{shares[default][1]:.2%}",
               f"≤ {TARGET_SHARE:.0%}", shares[default][1] <= TARGET_SHARE),
         Check("largest waveform served", f"{largest} bytes", f"≤ {TARGET_WAVEFORM_BYTES // 1000} KB",
               largest <= TARGET_WAVEFORM_BYTES)],
    )]


def _mix(url: str, songhash: str, recipe: dict) -> tuple[float, str, str]:
    """POST the recipe and read the whole mix: seconds taken, the X-Mix-Cache answer, the digest."""
    started = time.perf_counter()
    with requests.post(f"{url}/apiv1/mix/{songhash}", json=recipe, stream=True, timeout=600) as answer:
        answer.raise_for_status()
        for _ in answer.iter_content(1 << 20):
            pass
    return time.perf_counter() - started, answer.headers["X-Mix-Cache"], answer.headers["X-Mix-Digest"]


def _logged_renders(log: str) -> dict[str, tuple[float, float]]:
    """Each render REST logged: its digest -> (seconds, CPU seconds)."""
    return {digest: (float(wall), float(cpu)) for digest, wall, cpu in re.findall(
        r"mix ([0-9a-f]{32}) rendered in ([\d.]+) s, ([\d.]+) CPU s", log)}
