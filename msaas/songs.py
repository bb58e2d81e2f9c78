"""What the APIs do with songs, once for REST and gRPC alike: accept, describe, serve, remove and cancel them.

Each API turns its requests into these calls and their answers (or named errors) into its own wire format; no
rule about songs lives in an API.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import redis

from msaas.audio import measure
from msaas.callbacks import check_callback_url
from msaas.errors import BackendUnavailable, BadRequest, NotFound
from msaas.jobqueue import JobQueue
from msaas.jobs import Callback, Job
from msaas.naming import Result, check_songhash, parse_track
from msaas.options import Options
from msaas.status import ACTIVE, CANCELLED, DONE, FAILED, PROCESSING, QUEUED, STATES, SongStatus
from msaas.storage import Download, ObjectStore
from msaas.uploads import Upload

log = logging.getLogger(__name__)
ENQUEUED = "Song enqueued for separation"  # the reference's words; clients may compare them
TRACK_REMOVED = "Track removed"
SONG_REMOVED = "Song removed"


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


@dataclass(frozen=True)
class TrackRef:
    """One track of one result, as a track route names it."""

    result: Result
    track: str
    options: Options


@dataclass(frozen=True)
class SongState:
    """Where one result stands, as every API describes it."""

    songhash: str
    result: Result  # the result described (its tracks' names follow from it)
    state: str
    options: Options  # those the job was accepted with: what runs
    tracks: tuple[str, ...]  # every track the result has (or will have)
    attempts: int = 0
    timestamps: dict[str, str] = field(default_factory=dict)  # state -> ISO 8601 time it was reached
    reason: str = ""
    position: int | None = None  # queued: 1 for the next job a worker takes; None once a worker has it
    progress: float = 0.0
    worker: str = ""
    callback: dict | None = None  # delivered, attempts, outcome

    @property
    def ended(self) -> bool:
        return self.state in (DONE, FAILED, CANCELLED)


class Songs:
    def __init__(self, queue: JobQueue, store: ObjectStore, status: SongStatus, policy: Policy) -> None:
        self.queue = queue
        self.store = store
        self.status = status
        self.policy = policy

    def options(self, values: Mapping[str, object]) -> Options:
        return Options.resolve(values, self.policy.default_model)

    def callback(self, value: object) -> Callback:
        """A callback a client asks for; private targets are refused now, where the client hears why (the
        worker checks again when it connects)."""
        callback = Callback.parse(value)
        check_callback_url(callback.url, self.policy.callback_allow_hosts)
        return callback

    def submit(self, upload: Upload, options: Options, callback: Callback | None) -> Submitted:
        """Queue the song unless its result exists or is on its way."""
        if upload.size == 0:
            raise BadRequest("mp3 is empty", "missing_mp3")
        songhash = upload.songhash
        result = options.result(songhash, self.policy.default_model)
        state = self.status.get(result.id).get("state")
        # "done" is trusted without asking the store: it expires before the tracks do (worker/loop.py), and
        # removing a track, or finding one missing, drops it.
        if state == DONE:
            return Submitted(songhash, "Song already separated with these options; its tracks are ready "
                                       "(nothing queued)", False)
        if state in ACTIVE:
            return Submitted(songhash, _already(state, callback), False)
        # Only songs that will be queued are checked: a repeat of a finished song answers at once.
        seconds = measure(upload.path, self.policy.max_song_seconds)
        job = Job(songhash, options, result, seconds, callback)
        already_stored = self.store.has_input(songhash)
        if not already_stored:
            self.store.put_input(songhash, upload.path)
        try:
            state = self.status.enqueue_once(self.queue, job)
        except redis.RedisError as error:
            if not already_stored:  # never leave an MP3 behind that no job will ever pick up
                self.store.remove_input(songhash)
            raise BackendUnavailable(f"the job queue (Redis) is unreachable; nothing was queued: {error}") from None
        if state is not None:
            return Submitted(songhash, _already(state, callback), False)
        log.info("song %s enqueued (%s, %.0f s, callback %s)", songhash, result.tag or "defaults", seconds,
                 bool(callback))
        return Submitted(songhash, ENQUEUED, True)

    def describe(self, songhash: str, options: Options) -> SongState:
        """Where the result of these options stands; NotFound if it was never submitted."""
        result = options.result(check_songhash(songhash), self.policy.default_model)
        fields = self.status.get(result.id)
        if not fields or fields.get("state") not in STATES:
            raise NotFound(f"song {songhash} has not been submitted with these options", "song_not_found")
        ran = _stored_options(fields, options)
        state = fields["state"]
        return SongState(
            songhash=result.songhash,
            result=result,
            state=state,
            options=ran,
            tracks=ran.tracks(),
            attempts=int(fields.get("attempts") or 0),
            timestamps={name: _iso(fields[f"{name}_at"]) for name in STATES if f"{name}_at" in fields},
            reason=fields.get("reason", ""),
            position=self._position(result) if state == QUEUED else None,
            progress=float(fields.get("progress") or 0) if state == PROCESSING else 100.0 if state == DONE else 0.0,
            worker=fields.get("worker", "") if state == PROCESSING else "",
            callback={
                # pending until the worker's delivery threads have delivered it or given up
                "state": fields.get("callback_state") or (
                    "delivered" if fields.get("callback_delivered") == "true" else "failed"),
                "delivered": fields.get("callback_delivered") == "true",
                "attempts": int(fields.get("callback_attempts") or 0),
                "outcome": fields["callback"],
            } if "callback" in fields else None,
        )

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
        return TrackRef(options.result(songhash, self.policy.default_model), track, options)

    def open_track(self, ref: TrackRef) -> Download:
        try:
            return self.store.open_output(ref.result, ref.track, ref.options.format)
        except NotFound:
            raise NotFound(self.forget_missing(ref), "track_not_found") from None

    def track_link(self, ref: TrackRef) -> str:
        try:
            return self.store.output_link(ref.result, ref.track, ref.options.format)
        except NotFound:
            raise NotFound(self.forget_missing(ref), "track_not_found") from None

    def forget_missing(self, ref: TrackRef) -> str:
        """A track that is not stored: if its result says it is done, one of its tracks is gone (removed or
        expired behind the service's back), so forget that it is done, or repeats would be told its tracks are
        ready; return why the track is missing, for the client."""
        result, track, songhash = ref.result, ref.track, ref.result.songhash
        try:
            fields = self.status.get(result.id)
            if fields.get("state") == DONE and track in _stored_options(fields, ref.options).tracks():
                self.status.forget_done(result.id)
                return f"track {track} of song {songhash} is no longer stored; submit the song again to separate it"
        except redis.RedisError:
            fields = {}
        state = fields.get("state")
        if state == FAILED:
            return f"track {track} of song {songhash} does not exist: separation failed: {fields.get('reason')}"
        if state in ACTIVE:
            return f"track {track} of song {songhash} is not ready yet: the song is {state}"
        if state == CANCELLED:
            return f"track {track} of song {songhash} does not exist: the song was cancelled"
        return f"track {track} of song {songhash} does not exist"

    def remove_track(self, ref: TrackRef) -> None:
        result, track = ref.result, ref.track
        try:
            self.store.remove_output(result, track, ref.options.format)
        except NotFound:
            raise NotFound(f"there is no track {track} of song {result.songhash} to remove",
                           "track_not_found") from None
        self.status.forget_done(result.id)  # no longer whole: a new submission redoes it
        log.info("song %s: track %s removed", result.songhash, track)

    def cancel(self, songhash: str) -> int:
        """Cancel every queued or processing result of the song; how many there were."""
        songhash = check_songhash(songhash)
        cancelled = [result for result in self.status.results_of(songhash) if self.status.cancel(self.queue, result)]
        if cancelled:
            log.info("song %s: cancelled %s", songhash, ", ".join(cancelled))
        return len(cancelled)

    def remove(self, songhash: str) -> tuple[int, int]:
        """Cancel the song's jobs, then remove every track of it (all options), its input and its finished
        statuses; (objects removed, jobs cancelled). A cancelled status stays a while, saying so."""
        songhash = check_songhash(songhash)
        cancelled = self.cancel(songhash)
        removed = self.store.remove_song(songhash)
        forgotten = 0
        for result in self.status.results_of(songhash):
            if self.status.get(result).get("state") != CANCELLED:
                self.status.forget(result)
                forgotten += 1
        if not (cancelled or removed or forgotten):
            raise NotFound(f"there is nothing stored for song {songhash}", "song_not_found")
        log.info("song %s removed (%d objects, %d jobs cancelled)", songhash, removed, cancelled)
        return removed, cancelled

    def waiting(self) -> list[str]:
        return [job.songhash for job in self.queue.waiting()]

    def _position(self, result: Result) -> int | None:
        for position, job in enumerate(self.queue.waiting(), start=1):
            if job.result == result:
                return position
        return None


def _already(state: str, callback: Callback | None) -> str:
    reason = f"Song already {state} with these options; not queued again"
    if callback is not None:  # the job on its way keeps the callback it was queued with
        reason += "; this request's callback is not registered (the first submission's is)"
    return reason


def _stored_options(fields: Mapping[str, str], asked: Options) -> Options:
    """The options a status records (what runs), else those asked with (statuses from before they were kept)."""
    try:
        recorded = json.loads(fields["options"])
        return Options.resolve(recorded, recorded["model"])
    except (KeyError, ValueError, TypeError, BadRequest):
        return asked


def _iso(timestamp: str) -> str:
    return datetime.datetime.fromtimestamp(float(timestamp), datetime.UTC).isoformat(timespec="milliseconds")

