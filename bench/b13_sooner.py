"""Issue 23, hear it sooner: how soon a song's first stems come, what serving them costs the whole song, how long a
preview waits behind long songs, and how honest the ETA is.

- SOONER: a 4 minute song through the service with its first part served first (FIRST_PART_SECONDS, the default)
  and without (FIRST_PART_SECONDS=0: the worker as it was), alternating: POST to the first part downloadable, POST
  to every track downloadable.
- PREVIEW: 20 four-minute songs queued behind one being separated, then a preview of another: POST to the preview
  done; then the same preview alone on the idle worker (its own separation).
- ETA: 10 songs of mixed lengths submitted at once to 2 workers (one CPU each), after a few songs taught the
  workers' speed: each song's `eta_seconds` at submission and at half its wait, against when it was done.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import requests

from bench import songs
from bench.config import Plan
from bench.report import Check, Section, Table, seconds
from bench.stack import Callbacks, Stack, Upload, upload
from msaas.connections import connect_redis
from msaas.eta import Estimates, Speed
from msaas.jobqueue import JobQueue
from msaas.naming import songhash_of

POLL = 0.25  # seconds between status reads while waiting for a first part (a read costs REST ~5 ms)
ETA_POLL = 1.0  # ...and for the estimates of ten songs


def sooner(plan: Plan, scratch: Path) -> list[Section]:
    mp3 = songs.song(plan.sooner_seconds).read_bytes()
    sides = {"parts": {}, "whole": {"FIRST_PART_SECONDS": "0"}}
    runs: dict[str, list[tuple[float | None, float, float]]] = {side: [] for side in sides}
    with Callbacks() as callbacks:
        stacks = {side: Stack(scratch / f"sooner-{side}", plan.model, 1, {**plan.worker_env(plan.cores), **env})
                  for side, env in sides.items()}
        with stacks["parts"], stacks["whole"]:
            for rep in range(plan.sooner_reps):
                for side in sides if rep % 2 == 0 else reversed(list(sides)):
                    cpu = _cpu_seconds(stacks[side])
                    first, total = _timed(stacks[side], callbacks, songs.variant(mp3, f"sooner-{rep}-{side}"))
                    runs[side].append((first, total, _cpu_seconds(stacks[side]) - cpu))
                    print(f"SOONER run {rep + 1}/{plan.sooner_reps}, {side}: first part "
                          f"{'-' if first is None else seconds(first)}, whole {seconds(total)}, "
                          f"{runs[side][-1][2]:.0f} CPU-seconds", flush=True)
    first = statistics.median(run[0] for run in runs["parts"])
    total, today = (statistics.median(run[1] for run in runs[side]) for side in sides)
    cpu, cpu_today = (statistics.median(run[2] for run in runs[side]) for side in sides)
    rows = [[side, str(index), "-" if run[0] is None else seconds(run[0]), seconds(run[1]), f"{run[2]:.0f} s"]
            for side in sides for index, run in enumerate(runs[side], start=1)]
    return [Section(
        "SOONER: a 4 minute song's first stems, and what they cost the whole",
        [f"The rondo tiled to {plan.sooner_seconds:g} s (128 kbps), one worker with {plan.cores} CPUs and its "
         "default layout (whole, 2 segments at once). `parts`: FIRST_PART_SECONDS's default (10 s: a first chunk "
         "of 4 htdemucs segments, 13.65 s of song, then the rest in the same Demucs process); `whole`: "
         "FIRST_PART_SECONDS=0, the worker as before issue 23. First part: POST until a track of the part "
         f"downloads (status read every {POLL:g} s); whole: POST until the callback, every track downloadable; "
         "CPU time: the worker's children during the song (`/apiv1/usage`). "
         f"{plan.sooner_reps} run(s) per side, alternating."],
        [("runs", Table(["side", "run", "first part", "whole", "Demucs' CPU time"], rows))],
        [Check(f"time to the first stems / the whole separation ({seconds(first)} / {seconds(total)})",
               f"{first / total:.3f}", "≤ 0.15", first / total <= 0.15),
         Check(f"whole song with parts / without ({seconds(total)} / {seconds(today)})", f"{total / today:.3f}",
               "≤ 1.05", total / today <= 1.05),
         Check(f"the same in CPU time of the separation ({cpu:.0f} s / {cpu_today:.0f} s: what a busy machine "
               "blurs in wall time)", f"{cpu / cpu_today:.3f}", "report")],
    )]


def _cpu_seconds(stack: Stack) -> float:
    """CPU seconds the stack's separations used so far (usage: the worker's children, Demucs and ffmpeg)."""
    return requests.get(f"{stack.url}/apiv1/usage", timeout=30).json()["cpu_seconds"]


def _timed(stack: Stack, callbacks: Callbacks, mp3: bytes) -> tuple[float | None, float]:
    """(POST to a first part downloadable, or None if none came before the whole; POST to done)."""
    request = upload(mp3, callbacks=callbacks)
    started = time.perf_counter()
    stack.submit(request)
    first = None
    while first is None and callbacks.arrivals.get(request.songhash) is None:
        status = stack.status(request.songhash)
        if status.get("state") == "processing" and status.get("ready_seconds", 0) > 0:
            part = requests.get(status["tracks"]["vocals"], timeout=30)
            if part.ok and "X-Ready-Seconds" in part.headers:
                first = time.perf_counter() - started
        time.sleep(POLL)
    stack.wait_done(callbacks, request.songhash, 4 * 3600)
    total = callbacks.arrivals[request.songhash] - started
    if not stack.tracks_downloadable(request.songhash):
        raise RuntimeError(f"song {request.songhash} called back, but not all its tracks download")
    return first, total


def preview(plan: Plan, scratch: Path) -> list[Section]:
    mp3 = songs.song(plan.sooner_seconds).read_bytes()
    queue = [songs.variant(mp3, f"queued-{index}") for index in range(plan.preview_queue + 1)]
    hashes = [songhash_of(long_song) for long_song in queue]
    with Callbacks() as callbacks, Stack(scratch / "preview", plan.model, 1, plan.worker_env(plan.cores)) as stack:
        for index, long_song in enumerate(queue):
            stack.submit(upload(long_song, raw=True))
            if index == 0:  # the first under way before the others queue behind it
                _wait(lambda: stack.status(hashes[0]).get("progress", 0) >= 5, 600, "a long song under way")
        behind = len(stack.queued())
        request = _preview(songs.variant(mp3, "previewed"), callbacks)
        started = time.perf_counter()
        answer = stack.post(request)
        answer.raise_for_status()
        chosen = answer.json()["options"]
        stack.wait_done(callbacks, request.songhash, 3600)
        waited = callbacks.arrivals[request.songhash] - started
        first = stack.status(hashes[0])
        for songhash in hashes:
            requests.post(f"{stack.url}/apiv1/cancel/{songhash}", timeout=30)
        _wait(lambda: not stack.queued() and not _processing(stack), 120, "the worker to let the long songs go")
        # The same preview again, alone: its own separation.
        stack.remove(request.songhash)
        callbacks.forget(request.songhash)
        started = time.perf_counter()
        stack.post(request).raise_for_status()
        stack.wait_done(callbacks, request.songhash, 3600)
        alone = callbacks.arrivals[request.songhash] - started
    print(f"PREVIEW: {seconds(waited)} behind {behind} songs, {seconds(alone)} alone", flush=True)
    return [Section(
        "PREVIEW: a preview's wait behind 20 four-minute songs",
        [f"One worker ({plan.cores} CPUs) separating a {plan.sooner_seconds:g} s song, {behind} more queued behind "
         f"it; then a preview (`preview=true`: the service chose {chosen['start']:g} to {chosen['end']:g} s, the "
         "song's loudest 30 s) of another. The worker stops its song's Demucs (SIGSTOP), separates the preview, and "
         "lets it go on. POST to the preview's callback; then, the queue cancelled, the same preview alone on the "
         f"idle worker. The song it stopped was at {first.get('progress', 0):.0f}% and still processing when the "
         "preview was done."],
        [],
        [Check(f"preview's wait behind the queue / its own separation ({seconds(waited)} / {seconds(alone)})",
               f"{waited / alone:.2f}", "≤ 2", waited / alone <= 2),
         Check("the stopped song, when the preview was done", first.get("state", "?"), "processing",
               first.get("state") == "processing")],
    )]


def _preview(mp3: bytes, callbacks: Callbacks) -> Upload:
    """The song's upload asking for a preview."""
    request = upload(mp3, callbacks=callbacks)
    return replace(request, data=json.dumps({**json.loads(request.data), "preview": True}).encode())


def _processing(stack: Stack) -> bool:
    page = requests.get(f"{stack.url}/apiv1/queue", timeout=30).json()
    return any(song["state"] == "processing" for song in page["songs"])


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.5)


@dataclass
class Followed:
    """One song's estimates as it waited: (seconds since its POST, eta_seconds)."""

    seconds: float
    submitted: float
    estimates: list[tuple[float, float]] = field(default_factory=list)
    done: float | None = None  # seconds from its POST to its callback

    def error_at(self, at: float) -> tuple[float, float]:
        """(eta, what was left) at the first estimate from `at` seconds after the POST on."""
        when, eta = next(((when, eta) for when, eta in self.estimates if when >= at), self.estimates[-1])
        return eta, self.done - when


def eta(plan: Plan, scratch: Path) -> list[Section]:
    lengths = plan.eta_seconds
    env = plan.worker_env(1)
    with Callbacks() as callbacks, Stack(scratch / "eta", plan.model, 2, env) as stack:
        # The workers' speed, learnt as any service learns it: from songs separated before.
        warm = [upload(songs.variant(songs.song(length).read_bytes(), f"eta-warm-{length:g}"), callbacks=callbacks)
                for length in plan.eta_warm_seconds]
        for request in warm:
            stack.submit(request)
        for request in warm:
            stack.wait_done(callbacks, request.songhash, 3600)
        requests_ = [upload(songs.variant(songs.song(length).read_bytes(), f"eta-{index}"), callbacks=callbacks)
                     for index, length in enumerate(lengths)]
        followed: dict[str, Followed] = {}
        clock = time.perf_counter()
        for request, length in zip(requests_, lengths, strict=True):
            stack.submit(request)
            followed[request.songhash] = Followed(length, time.perf_counter() - clock)
            _note(stack, followed, request.songhash, clock)
        learnt = _speed(stack)
        while any(song.done is None for song in followed.values()):
            for songhash, song in followed.items():
                if song.done is None and (arrived := callbacks.arrivals.get(songhash)) is not None:
                    song.done = arrived - clock - song.submitted
                elif song.done is None:
                    _note(stack, followed, songhash, clock)
            time.sleep(ETA_POLL)
    rows, at_submission, at_half = [], [], []
    for song in followed.values():
        first_eta, first_left = song.error_at(0)
        half_eta, half_left = song.error_at(song.done / 2)
        at_submission.append(abs(first_eta - first_left) / first_left)
        at_half.append(abs(half_eta - half_left) / half_left)
        rows.append([f"{song.seconds:g} s", seconds(song.done), seconds(first_eta), f"{at_submission[-1]:.0%}",
                     seconds(half_eta), seconds(half_left), f"{at_half[-1]:.0%}"])
    print(f"ETA: mean error {statistics.mean(at_submission):.0%} at submission, {statistics.mean(at_half):.0%} "
          "half-way", flush=True)
    return [Section(
        "ETA: estimates against the truth, 10 songs of mixed lengths on 2 workers",
        [f"Two workers of one CPU each (DEMUCS_THREADS=1) on this machine's {plan.cores}. First "
         f"{len(plan.eta_warm_seconds)} songs ({', '.join(f'{s:g}' for s in plan.eta_warm_seconds)} s) teach them "
         f"the model's speed; then {len(lengths)} songs ({', '.join(f'{s:g}' for s in lengths)} s, in that order) "
         f"are submitted one after the other, each status read every {ETA_POLL:g} s. The error is |eta − actual| / "
         "actual, where actual is the wait still ahead: at submission (the first estimate, right after the POST) "
         "and at half of the song's whole wait.",
         f"The speed learnt from the first songs: {learnt.fixed:.1f} s + {learnt.per_second:.3f} s per second of "
         f"work (Demucs' whole segments: `Options.work`), of which Demucs' run from its first bar "
         f"{learnt.running:.3f} s and what follows it {learnt.after:.3f} s."],
        [("songs", Table(["song", "POST to done", "eta at submission", "error", "eta half-way", "left half-way",
                          "error"], rows))],
        [Check("mean error at submission", f"{statistics.mean(at_submission):.1%} (worst "
               f"{max(at_submission):.0%})", "≤ 20%", statistics.mean(at_submission) <= 0.20),
         Check("mean error half-way", f"{statistics.mean(at_half):.1%} (worst {max(at_half):.0%})", "≤ 20%",
               statistics.mean(at_half) <= 0.20)],
    )]


def _speed(stack: Stack) -> Speed:
    """The model's speed as the service learnt it (msaas/eta.py)."""
    connection = connect_redis(stack.settings)
    return Estimates(connection, JobQueue(connection, stack.settings.worker_queue, stack.settings.demucs_model),
                     stack.settings.lease_seconds, stack.settings.demucs_model).speed(stack.settings.demucs_model)


def _note(stack: Stack, followed: dict[str, Followed], songhash: str, clock: float) -> None:
    status = stack.status(songhash)
    if isinstance(status.get("eta_seconds"), int | float):
        song = followed[songhash]
        song.estimates.append((time.perf_counter() - clock - song.submitted, status["eta_seconds"]))
