"""MIXES (issue 24): what a mix rendered by the service costs against the separation it is made from, on a 4 minute
song, and how much waveform data a track's waveform route serves."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import requests

from bench import songs
from bench.config import Plan
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
    renders: dict[str, list[float]] = {name: [] for name in RECIPES}
    cached: dict[str, float] = {}
    stack = Stack(scratch / "mixes", plan.model, worker_env=plan.worker_env(plan.cores))
    with Callbacks() as callbacks, stack:
        separation = stack.separate(callbacks, mp3).seconds
        print(f"MIXES: {SONG_SECONDS} s song separated in {seconds(separation)}", flush=True)
        for name, recipe in RECIPES.items():
            for rep in range(RENDERS):
                varied = {**recipe, "gains": {**recipe.get("gains", {}), "bass": -0.01 * rep}}
                took, cache = _mix(stack.url, songhash, varied)
                assert cache == "miss", f"{name}: a fresh recipe answered {cache}"
                renders[name].append(took)
            cached[name], cache = _mix(stack.url, songhash, {**recipe, "gains": {**recipe.get("gains", {}),
                                                                                 "bass": 0.0}})
            assert cache == "hit"
            print(f"MIXES {name}: {', '.join(seconds(took) for took in renders[name])} rendered, "
                  f"{seconds(cached[name])} stored", flush=True)
        sizes = {track: len(requests.get(f"{stack.url}/apiv1/waveform/{songhash}/{track}", timeout=30).content)
                 for track in stack.tracks}
    default = next(iter(RECIPES))
    share = statistics.median(renders[default]) / separation
    largest = max(sizes.values())
    rows = [[name, seconds(statistics.median(took)), seconds(min(took)), seconds(cached[name]),
             f"{statistics.median(took) / separation:.2%}"] for name, took in renders.items()]
    return [Section(
        TITLE,
        [f"A {SONG_SECONDS} s song (the rondo tiled, 128 kbit/s MP3) through the service as `make run` starts it "
         f"(gunicorn REST, one worker on {plan.cores} CPUs), separated once into MP3 tracks (POST to the 4th track "
         f"downloadable: {seconds(separation)}), then mixed: each recipe {RENDERS} times, each time a recipe of "
         "its own (the bass a hundredth of a dB apart), so each is rendered (`X-Mix-Cache: miss`): POST "
         "/apiv1/mix until the mix is downloaded. Then once more an identical one: stored (`hit`). One ffmpeg per "
         "render (one thread), reading the tracks from the store."],
        [("Renders:", Table(["recipe", "median", "fastest", "stored (hit)", "of the separation"], rows)),
         ("Waveform data per track (GET /apiv1/waveform):", Table(
             ["track", "bytes"], [[track, str(size)] for track, size in sizes.items()]))],
        [Check(f"mix render / separation ({default}; {seconds(statistics.median(renders[default]))} / "
               f"{seconds(separation)})", f"{share:.2%}", f"≤ {TARGET_SHARE:.0%}", share <= TARGET_SHARE),
         Check("largest waveform served", f"{largest} bytes", f"≤ {TARGET_WAVEFORM_BYTES // 1000} KB",
               largest <= TARGET_WAVEFORM_BYTES)],
    )]


def _mix(url: str, songhash: str, recipe: dict) -> tuple[float, str]:
    """POST the recipe and read the whole mix: seconds taken, and the X-Mix-Cache answer."""
    started = time.perf_counter()
    with requests.post(f"{url}/apiv1/mix/{songhash}", json=recipe, stream=True, timeout=600) as answer:
        answer.raise_for_status()
        for _ in answer.iter_content(1 << 20):
            pass
    return time.perf_counter() - started, answer.headers["X-Mix-Cache"]
