"""FAIRNESS (issue 21): whose songs the workers take, with tenants, on the real stack: REST (gunicorn) with a
TENANTS_FILE, and real workers separating short clips with Demucs' tiny built-in model (`demucs_unittest`, offline:
the turns are what is measured, not the model).

1. A backlog does not hold another tenant back: tenant `bulk` queues 100 songs, then tenant `single` one. Wanted:
   of bulk's songs, at most one per worker (those running when single's song came) separated before it.
2. Weights share the workers: `heavy` (weight 3, clips of 2 s) and `light` (weight 1, clips of 3 s) both keep a
   backlog; once both are queued, the audio seconds of the songs the workers start are shared 3:1 (wanted: within
   10%), whatever the songs' counts (here about 9:2).
Order and shares are read from each song's status (`processing_at`, `done_at`), as its tenant sees it.
"""

from __future__ import annotations

import datetime
import json
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from bench import songs
from bench.config import Model, Plan
from bench.report import Check, Section, Table, seconds
from bench.stack import Stack

TITLE_BACKLOG = "FAIRNESS: one tenant's backlog and another tenant's song"
TITLE_WEIGHTS = "FAIRNESS: tenants of weights 3 and 1, both with a backlog"
MODEL = Model("demucs_unittest")
WORKERS = 2
BACKLOG = 100
TENANTS = {"bulk": 1.0, "single": 1.0, "heavy": 3.0, "light": 1.0}
CLIPS = {"bulk": 2.0, "single": 2.0, "heavy": 2.0, "light": 3.0}  # seconds
SHARE_TOLERANCE = 0.10
WAIT = 1800.0  # seconds any phase may take before the run gives up


def key(tenant: str) -> str:
    return f"{tenant}-bench-key"


@dataclass(frozen=True)
class Song:
    tenant: str
    songhash: str
    seconds: float
    queued_at: float = 0.0
    processing_at: float | None = None
    done_at: float | None = None


class Tenants:
    """The stack as its tenants use it: each submits and reads its own songs with its own key."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        # A connection per request: one kept between polls seconds apart may be closed by REST as it is reused.
        self.session = requests

    def submit(self, tenant: str, mp3: bytes, length: float) -> Song:
        answer = self.session.post(f"{self.stack.url}/apiv1/separate", data=mp3, timeout=120, headers={
            "Content-Type": "audio/mpeg", "Authorization": f"Bearer {key(tenant)}"})
        answer.raise_for_status()
        return Song(tenant, answer.json()["hash"], length)

    def status(self, song: Song) -> Song:
        answer = self.session.get(f"{self.stack.url}/apiv1/status/{song.songhash}", timeout=60,
                                  headers={"Authorization": f"Bearer {key(song.tenant)}"})
        answer.raise_for_status()
        times = {state: _epoch(when) for state, when in answer.json()["timestamps"].items()}
        if "failed" in times:
            raise RuntimeError(f"song {song.songhash} of {song.tenant} failed: {answer.json().get('reason')}")
        return Song(song.tenant, song.songhash, song.seconds, times["queued"], times.get("processing"),
                    times.get("done"))

    def active(self, tenant: str) -> int:
        """The tenant's songs queued or processing (its listing, every page)."""
        count, cursor = 0, None
        while True:
            answer = self.session.get(f"{self.stack.url}/apiv1/queue", params={"cursor": cursor} if cursor else {},
                                      headers={"Authorization": f"Bearer {key(tenant)}"}, timeout=60)
            answer.raise_for_status()
            count += len(answer.json()["songs"])
            cursor = answer.json()["next"]
            if not cursor:
                return count


def _epoch(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso).timestamp()


def clips(tenant: str, count: int) -> list[bytes]:
    """`count` distinct uploads (each its own songhash) of the tenant's clip."""
    mp3 = songs.song(CLIPS[tenant]).read_bytes()
    return [songs.variant(mp3, f"{tenant} {number}") for number in range(count)]


def run(plan: Plan, scratch: Path) -> list[Section]:
    tenants_file = scratch / "fairness-tenants.json"
    tenants_file.write_text(json.dumps({"tenants": [
        {"name": name, "keys": [key(name)], "weight": weight} for name, weight in TENANTS.items()]}))
    env = {"TENANTS_FILE": str(tenants_file), "RATE_LIMIT_PER_MINUTE": "0"}
    lengths = {tenant: songs.seconds_of(songs.song(CLIPS[tenant])) for tenant in TENANTS}
    with Stack(scratch / "fairness-backlog", MODEL, WORKERS, plan.worker_env(1), env) as stack:
        backlog = _backlog(Tenants(stack), lengths)
    with Stack(scratch / "fairness-weights", MODEL, WORKERS, plan.worker_env(1), env) as stack:
        weights = _weights(Tenants(stack), lengths, plan.fairness_songs)
    return [backlog, weights]


def _backlog(tenants: Tenants, lengths: dict[str, float]) -> Section:
    bulk = [tenants.submit("bulk", mp3, lengths["bulk"]) for mp3 in clips("bulk", BACKLOG)]
    single = tenants.submit("single", clips("single", 1)[0], lengths["single"])
    deadline = time.monotonic() + WAIT
    while (single := tenants.status(single)).done_at is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"single's song not separated within {WAIT:.0f} s")
        time.sleep(1.0)
    bulk = [tenants.status(song) for song in bulk]
    running = [song for song in bulk if song.processing_at is not None and song.processing_at < single.processing_at
               and (song.done_at is None or song.done_at > single.queued_at)]
    jumped = [song for song in bulk if song.processing_at is not None
              and single.queued_at < song.processing_at < single.processing_at]
    done_before = [song for song in bulk if song.done_at is not None and single.queued_at < song.done_at
                   < single.done_at]
    already = sum(song.done_at is not None and song.done_at <= single.queued_at for song in bulk)
    rows = [
        ["bulk's songs separated before single's came", str(already)],
        ["bulk's songs being separated when single's came", str(len(running) - len(jumped))],
        ["bulk's songs started after single's came, before it", str(len(jumped))],
        ["bulk's songs finished after single's came, before it", str(len(done_before))],
        ["single's song: queued to started", seconds(single.processing_at - single.queued_at)],
        ["single's song: queued to done", seconds(single.done_at - single.queued_at)],
        ["bulk's songs still waiting when single's was done", str(sum(song.processing_at is None for song in bulk))],
    ]
    print("FAIRNESS backlog: " + "; ".join(f"{what}: {value}" for what, value in rows), flush=True)
    notes = [f"{WORKERS} workers (one Demucs thread each), clips of {lengths['bulk']:.1f} s. Tenant bulk submits "
             f"{BACKLOG} songs through REST one after the other (the workers start on them meanwhile), then tenant "
             "single submits one. Counted from the songs' statuses: each song's processing_at and done_at."]
    checks = [Check("bulk's songs served before single's, once it was queued (started before it, not yet done "
                    "when it came)", str(len(running)), f"<= {WORKERS} (the workers)", len(running) <= WORKERS)]
    return Section(TITLE_BACKLOG, notes, [("Order", Table(["what", "value"], rows))], checks)


def _weights(tenants: Tenants, lengths: dict[str, float], measured: int) -> Section:
    # Enough of each for both to stay backlogged past the songs measured (heavy's share of them is 9 in 11).
    counts = {"heavy": measured + 20, "light": measured // 3 + 10}
    uploads = {tenant: clips(tenant, count) for tenant, count in counts.items()}
    submitted: list[Song] = []
    for number in range(max(counts.values())):  # interleaved: both start queueing at once
        for tenant in counts:
            if number < counts[tenant]:
                submitted.append(tenants.submit(tenant, uploads[tenant][number], lengths[tenant]))
    both_queued = time.time()
    deadline = time.monotonic() + WAIT
    while True:
        active = {tenant: tenants.active(tenant) for tenant in counts}
        done = sum(counts.values()) - sum(active.values())
        started_since = [song for song in map(tenants.status, submitted)
                         if song.processing_at is not None and song.processing_at >= both_queued]
        if len([song for song in started_since if song.done_at is not None]) >= measured + WORKERS:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {done} songs separated within {WAIT:.0f} s")
        if min(active.values()) == 0:
            raise RuntimeError(f"a tenant ran out of backlog before {measured} songs were measured: {active}")
        time.sleep(5.0)
    window = sorted(started_since, key=lambda song: song.processing_at)[:measured]
    audio = {tenant: sum(song.seconds for song in window if song.tenant == tenant) for tenant in counts}
    count = {tenant: sum(song.tenant == tenant for song in window) for tenant in counts}
    ratio = audio["heavy"] / audio["light"] if audio["light"] else float("inf")
    wanted = TENANTS["heavy"] / TENANTS["light"]
    share = audio["heavy"] / sum(audio.values())
    wanted_share = TENANTS["heavy"] / (TENANTS["heavy"] + TENANTS["light"])
    span = window[-1].processing_at - window[0].processing_at
    rows = [[tenant, f"{TENANTS[tenant]:g}", f"{lengths[tenant]:.2f} s", str(count[tenant]),
             f"{audio[tenant]:.1f} s", f"{audio[tenant] / sum(audio.values()):.1%}"] for tenant in counts]
    print(f"FAIRNESS weights: {count} songs, {audio} audio seconds, heavy:light {ratio:.2f}", flush=True)
    notes = [f"{WORKERS} workers. Both tenants submit through REST, interleaved ({counts['heavy']} songs of "
             f"{lengths['heavy']:.1f} s for heavy, {counts['light']} of {lengths['light']:.1f} s for light); measured "
             f"are the first {measured} songs the workers started once both had submitted everything "
             f"({seconds(span)} of starts), by processing_at."]
    # The same songs, from light's first start to its last: whole turns, so no turn is cut by the window's edges
    # (one light song more or less in 88 moves the ratio by about 6%).
    lights = [index for index, song in enumerate(window) if song.tenant == "light"]
    turns = window[lights[0]:lights[-1]]
    turn_audio = {tenant: sum(song.seconds for song in turns if song.tenant == tenant) for tenant in counts}
    checks = [Check(f"heavy : light, audio seconds of the first {measured} songs started",
                    f"{ratio:.2f} : 1 (heavy's share {share:.1%})",
                    f"{wanted:g} : 1 within {SHARE_TOLERANCE:.0%} (share {wanted_share:.0%})",
                    abs(ratio / wanted - 1) <= SHARE_TOLERANCE),
              Check(f"heavy : light, over whole turns ({len(turns)} of those songs, light's first start to its last)",
                    f"{turn_audio['heavy'] / turn_audio['light']:.2f} : 1")]
    return Section(TITLE_WEIGHTS, notes, [("Shares", Table(["tenant", "weight", "clip", "songs", "audio",
                                                            "share of audio"], rows))], checks)
