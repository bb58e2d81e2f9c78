"""B6 stall: how long a hostile callback receiver holds up the next song. One worker gets a song whose callback
goes to a receiver that answers `HTTP/1.1 200 OK` and then one header byte every 2 s, and right behind it a
second song; the stall is how much later the worker takes the second song than it does when the first song's
receiver is well-behaved (the first song's own separation time), alternating the two cases."""

from __future__ import annotations

import statistics
from pathlib import Path

from bench import songs
from bench.config import Plan
from bench.report import Check, Section, Table, seconds
from bench.stack import Callbacks, Stack, Upload, upload
from devstack.receivers import DrippingReceiver
from msaas.connections import connect_redis
from msaas.jobs import songhash_of
from msaas.status import SongStatus

TITLE = "B6 stall: a dripping callback receiver and the song behind it"
DRIP_SECONDS = 2.0  # between header bytes, as in issue 12
DRIP_BYTES = 35  # 70 s of answer per attempt: what one attempt held the worker for in issue 12
TARGET = 1.0  # seconds; the aim is 0, this leaves room for the noise of separating the same song twice


def run(plan: Plan, scratch: Path) -> list[Section]:
    mp3 = songs.song(plan.clip_seconds).read_bytes()
    first, second = songs.variant(mp3, "b6-first"), songs.variant(mp3, "b6-second")
    own: list[float] = []  # the first song's turn with a well-behaved receiver: its own separation time
    hostile: list[float] = []  # the same with the dripping receiver
    with (
        Callbacks() as callbacks,
        DrippingReceiver(DRIP_SECONDS, DRIP_BYTES) as dripping,
        Stack(scratch / "b6", plan.model, worker_env=plan.worker_env(plan.cores)) as stack,
    ):
        status = SongStatus(connect_redis(stack.settings))
        for rep in range(plan.reps):
            for drips in (False, True) if rep % 2 == 0 else (True, False):
                turn = _first_songs_turn(stack, status, callbacks, dripping if drips else None, first, second)
                (hostile if drips else own).append(turn)
                print(f"B6: first song's turn {seconds(turn)} ({'dripping' if drips else 'well-behaved'} receiver)",
                      flush=True)
    return [_section(plan, own, hostile)]


def _first_songs_turn(
    stack: Stack, status: SongStatus, callbacks: Callbacks, dripping: DrippingReceiver | None, first: bytes,
    second: bytes,
) -> float:
    """Seconds from the worker taking the first song to its taking the second, queued right behind it."""
    if dripping is None:
        before = upload(first, raw=True, callbacks=callbacks)
    else:
        before = Upload(songhash_of(first), first, {"Content-Type": "audio/mpeg"}, {"callback_url": dripping.url})
    after = upload(second, callbacks=callbacks)
    for request in (before, after):
        stack.remove(request.songhash)
        callbacks.forget(request.songhash)
    stack.submit(before)
    stack.submit(after)
    stack.wait_done(callbacks, after.songhash, 3600)
    taken = [float(status.get(request.songhash)["processing_at"]) for request in (before, after)]
    return taken[1] - taken[0]


def _section(plan: Plan, own: list[float], hostile: list[float]) -> Section:
    stall = statistics.median(hostile) - statistics.median(own)
    rows = [
        ["well-behaved", str(len(own)), *(seconds(value) for value in (statistics.median(own), max(own)))],
        ["dripping", str(len(hostile)), *(seconds(value) for value in (statistics.median(hostile), max(hostile)))],
    ]
    notes = [
        f"A {plan.clip_seconds:g} s song with a callback, then at once a second song, on one worker (default "
        f"CALLBACK_TIMEOUT, CALLBACK_ATTEMPTS, CALLBACK_BACKOFF). The first song's receiver is alternately a "
        f"well-behaved one and one that answers `HTTP/1.1 200 OK` and then a header byte every {DRIP_SECONDS:g} s "
        f"({DRIP_BYTES} bytes, {DRIP_SECONDS * DRIP_BYTES:.0f} s, per attempt). A turn: from the worker taking "
        "the first song to its taking the second (their `processing_at` in the status).",
        "Stall: median turn with the dripping receiver minus median turn with the well-behaved one.",
    ]
    checks = [Check("stall of the second song", seconds(stall), f"≤ {seconds(TARGET)} (aim: 0 s)", stall <= TARGET)]
    return Section(TITLE, notes, [("First song's turn:", Table(["receiver", "runs", "median", "max"], rows))], checks)
