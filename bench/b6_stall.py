"""B6 stall: how long a hostile callback receiver holds up the next song. One worker gets a song whose callback
goes to a receiver that answers `HTTP/1.1 200 OK` and then one header byte every 2 s, and right behind it a
second song. The stall is how long after the first song's callback went out (its tracks stored: the end of its
own work) the worker took the second song."""

from __future__ import annotations

import statistics
from pathlib import Path

import redis

from bench import songs
from bench.config import Plan
from bench.report import Check, Section, Table, ms, seconds
from bench.stack import Callbacks, Stack, Upload, upload
from devstack.receivers import DrippingReceiver
from msaas.connections import connect_redis
from msaas.naming import songhash_of

TITLE = "B6 stall: a dripping callback receiver and the song behind it"
DRIP_SECONDS = 2.0  # between header bytes, as in issue 12
DRIP_BYTES = 35  # 70 s of answer per attempt: what one attempt held the worker for in issue 12
TARGET = 0.5  # seconds; the aim is 0


def run(plan: Plan, scratch: Path) -> list[Section]:
    mp3 = songs.song(plan.clip_seconds).read_bytes()
    stalls: list[float] = []
    with (
        Callbacks() as callbacks,
        DrippingReceiver(DRIP_SECONDS, DRIP_BYTES) as dripping,
        Stack(scratch / "b6", plan.model, worker_env=plan.worker_env(plan.cores)) as stack,
    ):
        status = connect_redis(stack.settings)
        for rep in range(plan.reps):
            first, second = songs.variant(mp3, f"b6-first-{rep}"), songs.variant(mp3, f"b6-second-{rep}")
            stalls.append(_stall(stack, status, callbacks, dripping, first, second))
            print(f"B6: the second song waited {_span(stalls[-1])} beyond the first song's own work", flush=True)
    return [_section(plan, stalls)]


def _stall(
    stack: Stack, status: redis.Redis, callbacks: Callbacks, dripping: DrippingReceiver, first: bytes, second: bytes
) -> float:
    """Seconds from the first song's callback reaching the dripping receiver to the worker taking the second."""
    hostile = Upload(songhash_of(first), first, {"Content-Type": "audio/mpeg"}, {"callback_url": dripping.url})
    behind = upload(second, raw=True, callbacks=callbacks)
    called = len(dripping.arrivals)
    stack.submit(hostile)
    stack.submit(behind)
    stack.wait_done(callbacks, behind.songhash, 3600)
    return float(status.hget(f"status:{behind.songhash}", "processing_at")) - dripping.arrivals[called]


def _span(stall: float) -> str:
    # Below a second, in milliseconds; negative when the worker took the second song before the first song's
    # callback had even arrived (the delivery thread and the loop run side by side).
    return ms(stall) if abs(stall) < 1 else seconds(stall)


def _section(plan: Plan, stalls: list[float]) -> Section:
    notes = [
        f"{len(stalls)} times: a {plan.clip_seconds:g} s song whose callback goes to a receiver that answers "
        f"`HTTP/1.1 200 OK` and then a header byte every {DRIP_SECONDS:g} s ({DRIP_BYTES} bytes, "
        f"{DRIP_SECONDS * DRIP_BYTES:.0f} s, per attempt), then at once a second song, on one worker with the "
        "default CALLBACK_TIMEOUT, CALLBACK_ATTEMPTS and CALLBACK_BACKOFF. Stall: from the first callback request "
        "arriving whole at the receiver (the first song's tracks are stored by then) to the worker taking the "
        "second song (its `processing_at`); negative when the worker took the second song first. Issue 12 saw "
        "one attempt hold the worker 70 s (urllib3's timeouts bound each read, not the attempt).",
    ]
    rows = [[str(index + 1), _span(stall)] for index, stall in enumerate(stalls)]
    worst = max(stalls)
    checks = [
        Check("stall of the second song, median", _span(statistics.median(stalls)), "0 s"),
        Check("stall of the second song, worst", _span(worst), f"≤ {seconds(TARGET)} (aim: 0 s)", worst <= TARGET),
    ]
    return Section(TITLE, notes, [("Stall per run:", Table(["run", "stall"], rows))], checks)
