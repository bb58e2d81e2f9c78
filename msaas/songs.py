"""What the APIs do with songs, once for REST and gRPC alike: accept, describe, serve, remove and cancel them, each
for the tenant asking (msaas/claims.py: a tenant sees only what it submitted).

Each API turns its requests into these calls and their answers (or named errors) into its own wire format; no
rule about songs lives in an API.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

import redis

from msaas import engines
from msaas.audio import SAMPLE_RATE, measure
from msaas.callbacks import check_callback_url
from msaas.claims import Claims
from msaas.errors import BackendUnavailable, BadRequest, NotFound, OverLimit
from msaas.eta import Estimates
from msaas.jobqueue import JobQueue
from msaas.jobs import Callback, Job
from msaas.models import relative_cost
from msaas.naming import Result, check_songhash, parse_track
from msaas.options import Options
from msaas.previews import Loudness, Previews
from msaas.records import ACTIVE, CANCELLED, DONE, FAILED, PROCESSING, QUEUED, STATES
from msaas.shapes import CallbackState, SongState
from msaas.storage import Download, ObjectStore
from msaas.tenants import Tenant
from msaas.uploads import Upload

log = logging.getLogger(__name__)
ENQUEUED = "Song enqueued for separation"  # the reference's words; clients may compare them
TRACK_REMOVED = "Track removed"
SONG_REMOVED = "Song removed"
QUEUE_PAGE = 100  # songs a queue listing answers at most per page
SONGS_QUEUED_RETRY = 30  # seconds a client over its songs-queued limit is asked to wait


def cancel_reason(cancelled: int) -> str:
    return "Song cancelled" if cancelled else "Nothing queued or processing for this song"


@dataclass(frozen=True)
class Policy:
    """The settings that decide what is accepted, taken once from `Settings`."""

    default_model: str
    max_song_seconds: float
    callback_allow_hosts: str


@dataclass(frozen=True)
class Submitted:
    songhash: str
    reason: str
    queued: bool  # a new job went on the queue
    options: Options  # those the result is named by: a preview's range made concrete


@dataclass(frozen=True)
class TrackRef:
    """One track of one result, as a track route names it."""

    result: Result
    track: str
    options: Options


@dataclass(frozen=True)
class Track:
    """A track opened for download: the whole, or while the song is processing the part ready so far."""

    download: Download
    ready_seconds: float | None  # the part's length; None for the whole track


@dataclass(frozen=True)
class Waiting:
    """One of a tenant's songs in a queue listing."""

    songhash: str
    result: str
    state: str  # queued or processing
    position: int | None
    options: dict  # those it was submitted with


@dataclass(frozen=True)
class QueuePage:
    songs: list[Waiting]
    cursor: str | None  # where the next page starts; None after the last

    @property
    def waiting(self) -> list[str]:
        """The songhashes waiting for a worker, next first (the reference's listing)."""
        queued = sorted((song for song in self.songs if song.state == QUEUED), key=lambda song: song.position or 0)
        return [song.songhash for song in queued]


class Songs:
    def __init__(self, queue: JobQueue, store: ObjectStore, claims: Claims, policy: Policy,
                 estimates: Estimates) -> None:
        self.queue = queue
        self.store = store
        self.claims = claims
        self.policy = policy
        self.estimates = estimates
        self.previews = Previews(queue.redis)

    def options(self, values: Mapping[str, object]) -> Options:
        return Options.resolve(values, self.policy.default_model)

    def callback(self, value: object) -> Callback:
        """A callback a client asks for; private targets are refused now, where the client hears why (the
        worker checks again when it connects)."""
        callback = Callback.parse(value)
        check_callback_url(callback.url, self.policy.callback_allow_hosts)
        return callback

    def concrete(self, songhash: str, options: Options) -> Options:
        """The options a result is named by: a preview's range as chosen for the song; NotFound if none was yet."""
        found = self.previews.known(check_songhash(songhash), options)
        if found is None:
            raise NotFound(f"song {songhash} has not been submitted as a preview", "song_not_found")
        return found

    def submit(self, tenant: Tenant, upload: Upload, options: Options, callback: Callback | None) -> Submitted:
        """Claim the song's result for the tenant, and queue it unless it exists or is on its way. A range is
        checked against the song's length, and is what the job's seconds count (turns, time limit, quotas); a
        preview goes in the preview lane."""
        if upload.size == 0:
            raise BadRequest("mp3 is empty", "missing_mp3")
        songhash = upload.songhash
        length = None
        chosen = self.previews.known(songhash, options)
        if chosen is None:  # a preview of a song never previewed: weighed as it is measured, to choose its range
            loudness = Loudness()
            length = measure(upload.path, self.policy.max_song_seconds, loudness)
            chosen = self.previews.choose(songhash, options, loudness, length)
        options = chosen
        result = options.result(songhash, self.policy.default_model)
        status = self.claims.status(result.id)
        state = status.get("state")
        # "done" is trusted without asking the store: it expires before the tracks do (worker/loop.py), and
        # removing a track, or finding one missing, drops it.
        if status.get("removed"):
            state = "partial"  # a track was removed: no longer whole, so separated again
        if state in (DONE, *ACTIVE) and self.claims.owns(tenant.name, result.id):
            return Submitted(songhash, _already(state, callback), False, options)
        # Only songs that may be queued are measured: a repeat of one separated or on its way has its length.
        known = state in (DONE, *ACTIVE) and status.get("seconds")
        if known:
            seconds = float(status["seconds"])
        else:
            length = length or measure(upload.path, self.policy.max_song_seconds)
            seconds = options.within(length).range_seconds(length)
        if state != DONE:  # the workers serving its model can finish it (msaas/engines.py)
            engines.refuse_if_too_long(options.model, seconds, self.estimates.capabilities())
        cost = seconds * relative_cost(options.model)  # quotas count a song as htdemucs-seconds
        self.check_limits(tenant, cost, queues=state != DONE)
        job = Job(songhash, options, result, seconds, tenant=tenant.name,
                  lane="preview" if options.preview else "normal")
        already_stored = self.store.has_input(songhash)
        if not already_stored:
            self.store.put_input(songhash, upload.path)
        try:
            before, new_claim, took_callback = self.claims.submit(tenant.name, job, callback, tenant.weight)
        except redis.RedisError as error:
            # Refused (a ResponseError), nothing was queued: leave no MP3 behind that no job will pick up. Cut off
            # (a connection or timeout error), Redis may have queued the job before its answer was lost: it stays.
            if not already_stored and isinstance(error, redis.ResponseError):
                self.store.remove_input(songhash)
            raise BackendUnavailable(f"the job queue (Redis) is unreachable; the song may not be queued: {error}") \
                from None
        if new_claim:  # once the job is queued: an error here is a 503, the MP3 it needs staying
            self.claims.count_song(tenant.name, cost)
        if before in (DONE, *ACTIVE):
            return Submitted(songhash, _already(before, None if took_callback else callback), False, options)
        log.info("song %s enqueued for %s (%s, %.0f s, %s lane, callback %s)", songhash, tenant.name,
                 result.tag or "defaults", seconds, job.lane, bool(callback))
        return Submitted(songhash, ENQUEUED, True, options)

    def check_limits(self, tenant: Tenant, seconds: float, queues: bool = True) -> None:
        """The tenant's songs queued at once (unless this one `queues` nothing: it is done) and audio submitted a day
        (msaas/tenants.py); OverLimit naming the limit."""
        if queues and tenant.songs_queued and self.claims.active_count(tenant.name) >= tenant.songs_queued:
            raise OverLimit(f"tenant {tenant.name} has {tenant.songs_queued} songs queued or processing, its limit; "
                            "submit more as they finish", "songs_queued", retry_after=SONGS_QUEUED_RETRY)
        if tenant.audio_minutes_per_day:
            used = self.claims.audio_today(tenant.name)
            if used + seconds > tenant.audio_minutes_per_day * 60:
                now = datetime.datetime.now(datetime.UTC)
                midnight = (now + datetime.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
                raise OverLimit(
                    f"tenant {tenant.name} has submitted {used / 60:.1f} of its {tenant.audio_minutes_per_day:g} audio "
                    f"minutes today (UTC); this song is {seconds / 60:.1f} more", "audio_minutes_per_day",
                    retry_after=int((midnight - now).total_seconds()) + 1)

    def describe(self, tenant: Tenant, songhash: str, options: Options) -> SongState:
        """Where the result of these options stands for this tenant; NotFound if it never submitted it."""
        options = self.concrete(songhash, options)
        result = options.result(check_songhash(songhash), self.policy.default_model)
        view = self.claims.view(tenant.name, result.id)
        if view is None or view.status.get("state") not in STATES:
            raise NotFound(f"song {songhash} has not been submitted with these options", "song_not_found")
        fields = view.status
        ran = _stored_options(fields, options)
        state = fields["state"]
        progress = float(fields.get("progress") or 0) if state == PROCESSING else 100.0 if state == DONE else 0.0
        return SongState(
            songhash=result.songhash,
            state=state,
            options=ran.as_fields(),
            tracks=_present(ran.tracks(), fields),
            attempts=int(fields.get("attempts") or 0),
            timestamps={name: _iso(fields[f"{name}_at"]) for name in STATES if f"{name}_at" in fields},
            reason=fields.get("reason", ""),
            position=self.queue.position(fields["job_id"]) if state == QUEUED else None,
            progress=progress,
            worker=fields.get("worker", "") if state == PROCESSING else "",
            callback=_callback_state(view.claim),
            eta_seconds=self._eta(fields, state, ran, progress),
            reconstruction_db=float(fields["reconstruction_db"]) if fields.get("reconstruction_db") else None,
            ready_seconds=_ready_seconds(fields, state),
        )

    def _eta(self, fields: Mapping[str, str], state: str, options: Options, progress: float) -> float | None:
        work = options.work(float(fields.get("seconds") or 0))
        if state == QUEUED:
            return self.estimates.queued(fields["job_id"], options.model, work)
        if state == PROCESSING and "processing_at" in fields:
            return self.estimates.processing(options.model, work, progress, float(fields["processing_at"]),
                                             *(float(fields[name]) if name in fields else None
                                               for name in ("running_at", "progress_at")))
        return None

    def track(self, songhash: str, track: str, values: Mapping[str, object]) -> TrackRef:
        """The track a track route names; its extension implies the format."""
        songhash = check_songhash(songhash)
        track, extension = parse_track(track)
        values = dict(values)
        if extension and values.get("format") in (None, ""):
            values["format"] = extension
        options = self.options(values)
        if extension and extension != options.format:
            raise BadRequest(f"track extension .{extension} does not match format {options.format}", "invalid_track")
        options = self.concrete(songhash, options)
        return TrackRef(options.result(songhash, self.policy.default_model), track, options)

    def open_track(self, tenant: Tenant, ref: TrackRef) -> Track:
        """The track of a done result, or the part ready so far of one processing."""
        key, ready = self._track_key(tenant, ref)
        try:
            return Track(self.store.open_output(key), ready)
        except NotFound:
            raise NotFound(self._gone(ref, ready), "track_not_found") from None

    def track_link(self, tenant: Tenant, ref: TrackRef) -> str:
        key, ready = self._track_key(tenant, ref)
        try:
            return self.store.output_link(key)
        except NotFound:
            raise NotFound(self._gone(ref, ready), "track_not_found") from None

    def _track_key(self, tenant: Tenant, ref: TrackRef) -> tuple[str, float | None]:
        """Where the track of a done result is stored (under the published attempt's names), or the part of it ready
        while it is processing (under the running attempt's, and that part's seconds). NotFound, saying why, for a
        result that has neither, or is not this tenant's."""
        view = self.claims.view(tenant.name, ref.result.id)
        fields = view.status if view is not None else {}
        tracks = _present(_stored_options(fields, ref.options).tracks(), fields)
        state, ready = fields.get("state"), int(fields.get("ready") or 0)
        if ref.track in tracks and state == PROCESSING and ready > 0 and fields.get("token"):
            return ref.result.ready_key(fields["token"], ready, ref.track, ref.options.format), ready / SAMPLE_RATE
        if state != DONE or ref.track not in tracks:
            raise NotFound(_missing(ref, fields), "track_not_found")
        return track_key(fields, ref), None

    def _gone(self, ref: TrackRef, ready: float | None) -> str:
        """Why a track the status names is not stored: a part whose attempt stopped meanwhile, or a done track."""
        if ready is not None:
            return f"track {ref.track} of song {ref.result.songhash} is not ready any more: the attempt separating " \
                   "it stopped; ask for the status again"
        return self.forget_missing(ref)

    def forget_missing(self, ref: TrackRef) -> str:
        """A done result's track that is not stored (removed or expired behind the service's back): forget that it
        is done, or repeats would be told its tracks are ready; return why the track is missing, for the client."""
        self.claims.forget_done(ref.result.id)
        return f"track {ref.track} of song {ref.result.songhash} is no longer stored; submit the song again to " \
               "separate it"

    def remove_track(self, tenant: Tenant, ref: TrackRef) -> None:
        """Remove a track for this tenant: the object goes if no other tenant claims the result (which is then no
        longer whole: a new submission separates it again); otherwise only the tenant's claim on the result goes."""
        result, track = ref.result, ref.track
        view = self.claims.view(tenant.name, result.id)
        fields = view.status if view is not None else {}
        missing = NotFound(f"there is no track {track} of song {result.songhash} to remove", "track_not_found")
        if fields.get("state") != DONE or track not in _present(_stored_options(fields, ref.options).tracks(), fields):
            raise missing
        if self.claims.sole_owner(tenant.name, result.id):
            try:
                self.store.remove_output(track_key(fields, ref))
            except NotFound:
                raise missing from None
        self.claims.drop_track(tenant.name, result.id, track)
        log.info("song %s: track %s removed for %s", result.songhash, track, tenant.name)

    def cancel(self, tenant: Tenant, songhash: str) -> int:
        """Cancel the tenant's queued and processing results of the song; how many there were."""
        songhash = check_songhash(songhash)
        cancelled = [result for result in self.claims.results_of(tenant.name, songhash)
                     if self.claims.cancel(tenant.name, result)]
        if cancelled:
            log.info("song %s: cancelled %s for %s", songhash, ", ".join(cancelled), tenant.name)
        return len(cancelled)

    def remove(self, tenant: Tenant, songhash: str) -> tuple[int, int]:
        """Drop the tenant's claims on every result of the song (cancelling active ones); the tracks of results no
        tenant claims any more go, and the input once no result of the song is claimed. (objects removed, jobs
        cancelled); NotFound if the tenant had nothing of the song."""
        songhash = check_songhash(songhash)
        removed = self.claims.remove(tenant.name, songhash)
        if not removed.claims:
            raise NotFound(f"there is nothing stored for song {songhash}", "song_not_found")
        objects = 0
        for result_id, _published in removed.orphans:
            result = Result.parse(result_id)
            objects += self.store.remove_prefix(result.objects)
            if not result.tag:  # the reference's names, from before attempts had names of their own
                objects += self.store.remove_prefix(f"{songhash}-")
        if not removed.song_claimed:
            self.previews.forget(songhash)
        if not removed.song_claimed and self.store.has_input(songhash):
            self.store.remove_input(songhash)
            objects += 1
        log.info("song %s removed for %s (%d objects, %d jobs cancelled)", songhash, tenant.name, objects,
                 removed.cancelled)
        return objects, removed.cancelled

    def queue_page(self, tenant: Tenant, cursor: str | None = None, limit: int = QUEUE_PAGE) -> QueuePage:
        """The tenant's queued and processing songs, in the order submitted, each with its place in the queue; a page
        at a time (`cursor` from the page before)."""
        limit = max(1, min(limit, QUEUE_PAGE))
        rows = self.claims.active(tenant.name, _parse_cursor(cursor), limit)
        songs = []
        states = self.claims.states([result for result, _ in rows])
        for (result, _), (state, job_id, options) in zip(rows, states, strict=True):
            if state in ACTIVE:
                position = self.queue.position(job_id) if state == QUEUED else None
                ran = _stored_options({"options": options} if options else {}, self.options({}))
                songs.append(Waiting(result.partition("/")[0], result, state, position, ran.as_fields()))
        more = len(rows) == limit
        return QueuePage(songs, f"{rows[-1][1]!r}:{rows[-1][0]}" if more else None)


def track_key(fields: Mapping[str, str], ref: TrackRef) -> str:
    """A done result's track: under its published attempt's names, or where results were kept before those."""
    published = fields.get("published")
    if published:
        return ref.result.attempt_key(published, ref.track, ref.options.format)
    return ref.result.key(ref.track, ref.options.format)


def stored_tracks(fields: Mapping[str, str], result: Result, asked: Options) -> tuple[Options, dict[str, str]]:
    """What a done result ran with, and where each of its tracks is stored (those removed left out)."""
    ran = _stored_options(fields, asked)
    return ran, {track: track_key(fields, TrackRef(result, track, ran)) for track in _present(ran.tracks(), fields)}


def _ready_seconds(fields: Mapping[str, str], state: str) -> float:
    """Processing: the seconds of its tracks the running attempt has stored; done: all of them."""
    if state == PROCESSING:
        return int(fields.get("ready") or 0) / SAMPLE_RATE
    return float(fields.get("seconds") or 0) if state == DONE else 0.0


def _present(tracks: tuple[str, ...], fields: Mapping[str, str]) -> tuple[str, ...]:
    """A result's tracks but those removed since it was separated."""
    removed = set(fields.get("removed", "").split(","))
    return tuple(track for track in tracks if track not in removed)


def _missing(ref: TrackRef, fields: Mapping[str, str]) -> str:
    track, songhash, state = ref.track, ref.result.songhash, fields.get("state")
    if ref.track in fields.get("removed", "").split(","):
        return f"track {track} of song {songhash} was removed; submit the song again to separate it again"
    if state == FAILED:
        return f"track {track} of song {songhash} does not exist: separation failed: {fields.get('reason')}"
    if state in ACTIVE:
        return f"track {track} of song {songhash} is not ready yet: the song is {state}"
    if state == CANCELLED:
        return f"track {track} of song {songhash} does not exist: the song was cancelled"
    return f"track {track} of song {songhash} does not exist"


def _already(state: str, callback: Callback | None) -> str:
    if state == DONE:
        return "Song already separated with these options; its tracks are ready (nothing queued)"
    reason = f"Song already {state} with these options; not queued again"
    if callback is not None:  # the job on its way keeps the callback it was queued with
        reason += "; this request's callback is not registered (the first submission's is)"
    return reason


def _callback_state(claim: Mapping[str, str]) -> CallbackState | None:
    state = claim.get("callback_state")
    if state not in ("pending", "delivered", "failed"):
        return None  # none, or still waiting for the song
    return CallbackState(state, claim.get("callback_delivered") == "true", int(claim.get("callback_attempts") or 0),
                         claim.get("callback_outcome", ""))


def _stored_options(fields: Mapping[str, str], asked: Options) -> Options:
    """The options a status records (what runs), else those asked with (statuses from before they were kept)."""
    try:
        recorded = json.loads(fields["options"])
        return Options.resolve(recorded, recorded["model"])
    except (KeyError, ValueError, TypeError, BadRequest):
        return asked


def _parse_cursor(cursor: str | None) -> tuple[float, str] | None:
    if not cursor:
        return None
    score, _, member = cursor.partition(":")
    try:
        value = float(score)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not member:
        raise BadRequest(f"cursor {cursor[:80]!r} is not one a listing gave", "invalid_cursor")
    return value, member


def _iso(timestamp: str) -> str:
    return datetime.datetime.fromtimestamp(float(timestamp), datetime.UTC).isoformat(timespec="milliseconds")

