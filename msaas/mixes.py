"""Mixes of a done song's tracks, rendered by the service, and its tracks' waveforms: what both APIs do for
`POST /apiv1/mix/<songhash>` (RenderMix) and `GET /apiv1/waveform/<songhash>/<track>` (GetWaveform).

A mix is rendered from the stored tracks of the result's published attempt, never by separating again, by one
ffmpeg process (msaas/rendering.py) that reads the tracks it needs from the store. It is stored beside the tracks,
under the attempt's names (`<songhash>/<tag>/<token>/mixes/<digest>.<format>`), so removing the song removes its
mixes, and a new separation (a new token) never serves an old one.

Rendered once under races: the key is a pure function of the recipe's digest and the attempt, and a Redis lock per
key, holding a fencing token, elects one renderer; the others wait until it is stored (or the lock is gone: they
take it over). The renderer stores the mix only while its token is still the lock's and the result is still done
with that attempt, and releases the lock only if it is still its own; a renderer that lost its lock meanwhile
(paused past its lease) can only write the very bytes the new holder writes, to the same key.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import redis

from msaas import rendering
from msaas.audio import CHANNELS, SAMPLE_RATE
from msaas.errors import BackendUnavailable, Conflict, NotFound
from msaas.naming import Result, check_songhash, waveform_key
from msaas.recipes import Mix, Recipe
from msaas.records import DONE, STATES, status_key
from msaas.rendering import RenderFailed
from msaas.scratch import claim
from msaas.songs import Songs, stored_tracks
from msaas.storage import Download
from msaas.tenants import Tenant

log = logging.getLogger(__name__)
RENDER_SECONDS = 30.0  # a render may take this long, plus...
RENDER_SECONDS_PER_SECOND = 0.25  # ...this share of the song (a 4 minute MP3 mix takes about 3 s on one CPU)
POLL_SECONDS = 0.2  # how often a request waiting for another's render looks again
MAX_WAVEFORM_BYTES = 64 * 1024  # a waveform is under 20 KB (worker/mixdown.py); more is not one of ours
FENCE = "mixes:fence"
CACHE_MISS, CACHE_HIT, CACHE_SHARED = "miss", "hit", "shared"

# KEYS: the lock, the fencing counter. ARGV: lease in ms. A new fencing token, and the lock with it unless another
# holds it: the token, or 0.
ACQUIRE = """
local token = redis.call('INCR', KEYS[2])
if redis.call('SET', KEYS[1], token, 'NX', 'PX', ARGV[1]) then return token end
return 0
"""
# KEYS: the lock, the result's status. ARGV: token, the published attempt. 'held' while the token is the lock's and
# the result is still done with that attempt; 'lost' or 'gone' otherwise.
HELD = f"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'lost' end
local state, published = unpack(redis.call('HMGET', KEYS[2], 'state', 'published'))
if state ~= '{DONE}' or (published or '') ~= ARGV[2] then return 'gone' end
return 'held'
"""
# KEYS: the lock. ARGV: token. Released only by its holder.
RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def mix_key(result: Result, token: str, digest: str, extension: str) -> str:
    """Beside the published attempt's tracks (results stored before attempts had names: under `legacy`)."""
    return f"{result.objects}{token or 'legacy'}/mixes/{digest}.{extension}"


@dataclass(frozen=True)
class Plan:
    """One mix to answer: of which result and attempt, from which stored tracks, stored where."""

    result: Result
    token: str  # the published attempt ('' for results stored before attempts had names)
    mix: Mix
    tracks: dict[str, str]  # every stored track heard (or the one a silence takes its length from): its key
    key: str
    seconds: float  # the song's length
    asked_at: float  # when the request came (monotonic): it waits for another's render no longer than a lease

    @property
    def lock(self) -> str:
        return f"mixes:lock:{self.key}"

    @property
    def largest(self) -> int:
        """Bytes the mix may take at most: its length a little over the song's (MP3 tracks are padded)."""
        seconds = self.seconds * 1.01 + 1
        if self.mix.format == "mp3":
            return int(seconds * (self.mix.mp3_bitrate or 320) * 1000 / 8) + 65536
        width = 4 if self.mix.sample_format == "float32" else 2  # FLAC: at most 16-bit PCM and its frames' headers
        return int(seconds * SAMPLE_RATE * CHANNELS * width * 1.01) + 65536

    @property
    def limit(self) -> float:
        """Seconds the render may take."""
        return RENDER_SECONDS + RENDER_SECONDS_PER_SECOND * self.seconds


@dataclass(frozen=True)
class Rendered:
    plan: Plan
    size: int
    cache: str  # CACHE_MISS, CACHE_HIT or CACHE_SHARED

    def describe(self) -> dict[str, object]:
        """What the APIs say of it, besides its bytes or link."""
        plan = self.plan
        return {"size": self.size, "content_type": plan.mix.content_type, "digest": plan.mix.digest,
                "filename": plan.mix.filename(plan.result.songhash), "cache": self.cache}


class Mixes:
    def __init__(self, songs: Songs, work_dir: Path | None, store_timeout: float) -> None:
        self.songs = songs
        self.store = songs.store
        self.redis: redis.Redis = songs.claims.redis
        self.work_dir = work_dir
        self.store_timeout = store_timeout
        self._scripts = {name: self.redis.register_script(source)
                         for name, source in (("acquire", ACQUIRE), ("held", HELD), ("release", RELEASE))}

    def plan(self, tenant: Tenant, songhash: str, options: Mapping[str, object], recipe: object) -> Plan:
        """The mix a request asks for, checked against the tenant's result: BadRequest for a bad recipe, NotFound
        for a song the tenant did not submit with these options, Conflict while it is not done."""
        songhash = check_songhash(songhash)
        asked = self.songs.options(options)
        parsed = Recipe.parse(recipe, self.songs.policy.default_model)
        result = asked.result(songhash, self.songs.policy.default_model)
        fields = self._done(tenant, result)
        ran, stored = stored_tracks(fields, result, asked)
        mix = parsed.bind(ran.tracks())
        heard = dict(mix.sources())
        removed = [track for track in heard if track not in stored]
        if removed:
            raise NotFound(f"track {removed[0]} of song {songhash} was removed; mute it to mix the others, or submit "
                           "the song again", "track_not_found")
        token = fields.get("published", "")
        return Plan(result, token, mix, {track: stored[track] for track in heard},
                    mix_key(result, token, mix.digest, mix.format), float(fields.get("seconds") or 0),
                    time.monotonic())

    def render(self, plan: Plan, sleep: Callable[[float], None] = time.sleep) -> Rendered:
        """The mix, stored: found, rendered here, or rendered by a request at the same time (REST: gevent's sleep
        lets others run while this one waits; gRPC's calls make the same steps, awaiting between them)."""
        waited = False
        while (rendered := self.attempt(plan, waited)) is None:
            waited = True
            while self.rendering_elsewhere(plan):
                sleep(POLL_SECONDS)
        return rendered

    def attempt(self, plan: Plan, waited: bool = False) -> Rendered | None:
        """One step, never waiting on another request: the mix if it is stored or this request renders it; None
        while another request renders it."""
        size = self.store.output_size(plan.key)
        if size is not None:
            return Rendered(plan, size, CACHE_SHARED if waited else CACHE_HIT)
        token = int(self._scripts["acquire"](keys=[plan.lock, FENCE], args=[int(self._lease(plan) * 1000)]))
        if not token:
            return None
        try:
            size = self.store.output_size(plan.key)  # stored between the look above and the lock
            if size is not None:
                return Rendered(plan, size, CACHE_SHARED if waited else CACHE_HIT)
            size = self._render(plan, str(token))
            return None if size is None else Rendered(plan, size, CACHE_MISS)
        finally:
            self._scripts["release"](keys=[plan.lock], args=[token])

    def rendering_elsewhere(self, plan: Plan) -> bool:
        """Whether another request still holds the mix's lock; BackendUnavailable once this one has waited longer
        than a render may take."""
        if time.monotonic() - plan.asked_at > self._lease(plan):
            raise BackendUnavailable(f"the mix of song {plan.result.songhash} has been rendering for longer than "
                                     f"{self._lease(plan):.0f} s; try again")
        return bool(self.redis.exists(plan.lock))

    def open(self, rendered: Rendered) -> Download:
        try:
            return self.store.open_output(rendered.plan.key)
        except NotFound:
            raise self._gone(rendered.plan) from None

    def link(self, rendered: Rendered) -> str:
        try:
            return self.store.output_link(rendered.plan.key)
        except NotFound:
            raise self._gone(rendered.plan) from None

    def waveform(self, tenant: Tenant, songhash: str, track: str, options: Mapping[str, object]) -> bytes:
        """A track's waveform as the worker stored it (JSON, msaas/mixdown.py); NotFound for a song or track the
        tenant does not have (or a song separated before waveforms were kept), Conflict while it is not done."""
        ref = self.songs.track(songhash, track, options)
        fields = self._done(tenant, ref.result)
        _, stored = stored_tracks(fields, ref.result, ref.options)
        token = fields.get("published", "")
        if ref.track not in stored:
            raise NotFound(f"song {ref.result.songhash} has no track {ref.track}", "track_not_found")
        try:
            data = b"".join(self.store.open_output(waveform_key(ref.result, token, ref.track)))
        except NotFound:
            data = b""
        if not token or not data or len(data) > MAX_WAVEFORM_BYTES:
            raise NotFound(f"track {ref.track} of song {ref.result.songhash} has no waveform: it was separated before "
                           "the service kept them", "waveform_not_found")
        return data

    def _done(self, tenant: Tenant, result: Result) -> dict[str, str]:
        view = self.songs.claims.view(tenant.name, result.id)
        if view is None or view.status.get("state") not in STATES:
            raise NotFound(f"song {result.songhash} has not been submitted with these options", "song_not_found")
        state = view.status["state"]
        if state != DONE:
            raise Conflict(f"song {result.songhash} is {state}: mixes and waveforms are made of a done song's tracks",
                           "song_not_done")
        return view.status

    def _lease(self, plan: Plan) -> float:
        """How long a render holds its lock: the render's limit and its upload's."""
        return plan.limit + self.store_timeout

    def _render(self, plan: Plan, token: str) -> int | None:
        """Render the mix and store it while this request holds its lock; its size, or None if the lock was lost
        (another request renders it now)."""
        scratch = claim(self.work_dir, "mixes")
        output = scratch / f"mix-{token}.{plan.mix.format}"
        started = time.monotonic()
        try:
            with rendering.turn(plan.largest):
                cpu_seconds = self._run(plan, output)
            size = output.stat().st_size
            held = self._scripts["held"](keys=[plan.lock, status_key(plan.result.id)], args=[token, plan.token])
            log.info("song %s: mix %s rendered in %.1f s, %.2f CPU s (%d tracks, %s, %d bytes)%s", plan.result.songhash,
                     plan.mix.digest, time.monotonic() - started, cpu_seconds, len(plan.tracks), plan.mix.format, size,
                     "" if held == "held" else f"; not stored: {held}")  # every render says so: the tests count them
            if held == "gone":
                raise self._gone(plan)
            if held != "held":
                return None
            self.store.put_output(plan.key, str(output), plan.mix.format)
        finally:
            output.unlink(missing_ok=True)
        return size

    def _run(self, plan: Plan, output: Path) -> float:
        """Render the mix into `output`; the CPU seconds it took."""
        gains = dict(plan.mix.sources())
        minutes = math.ceil(plan.limit / 60) + 1  # ffmpeg's links to the tracks outlive the render, no more
        sources = [(self.store.reader_link(key, minutes), gains[track]) for track, key in plan.tracks.items()]
        try:
            return rendering.run(sources, output, plan.mix, plan.limit)
        except RenderFailed as failure:
            if failure.missing:
                raise NotFound(f"a track of song {plan.result.songhash} is no longer stored; submit the song again "
                               "to separate it", "track_not_found") from None
            log.warning("song %s: ffmpeg could not render mix %s: %s", plan.result.songhash, plan.mix.digest,
                        failure)
            raise BackendUnavailable(f"the mix of song {plan.result.songhash} could not be rendered ({failure.why}); "
                                     "try again") from None

    @staticmethod
    def _gone(plan: Plan) -> NotFound:
        return NotFound(f"song {plan.result.songhash} was removed or separated again while its mix was made; ask "
                        "again", "song_not_found")
