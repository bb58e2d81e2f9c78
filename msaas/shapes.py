"""The song status, defined once: `SongState` and the table of its wire fields.

REST's JSON (`as_json`), its OpenAPI schema (`schema`), gRPC's `SongStatus` message (rpc/messages.py, and the
CLI's reading of it, msaas/cli/grpc_client.py) are all made from `FIELDS`; tests/test_shapes.py holds the proto's
message to the table, field by field, and reads every field on both APIs. Standard library only: the CLI imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from msaas.options import SPECS

QUEUED, PROCESSING, DONE, FAILED, CANCELLED = "queued", "processing", "done", "failed", "cancelled"
STATES = (QUEUED, PROCESSING, DONE, FAILED, CANCELLED)
CALLBACK_STATES = ("pending", "delivered", "failed")


@dataclass(frozen=True)
class CallbackState:
    """How a tenant's callback went: pending until it is delivered or given up on."""

    state: str
    delivered: bool
    attempts: int
    outcome: str  # "200", "503", "timeout after 10 s", "refused: ...", "pending"


@dataclass(frozen=True)
class SongState:
    """Where one result stands, as every API describes it."""

    songhash: str
    state: str
    options: dict[str, Any]  # the options the job was accepted with, every one concrete: what runs
    tracks: tuple[str, ...]  # every track the result has (or will have)
    attempts: int = 0
    timestamps: dict[str, str] = field(default_factory=dict)  # state -> ISO 8601 time it was reached
    reason: str = ""
    position: int | None = None  # queued: 1 for the next job a worker takes; None once a worker has it
    progress: float = 0.0
    worker: str = ""
    callback: CallbackState | None = None
    eta_seconds: float | None = None  # queued or processing: seconds until it is expected done
    reconstruction_db: float | None = None  # done: how closely the tracks sum to the song (worker/mixdown.py)
    ready_seconds: float = 0.0  # processing: seconds of its tracks stored so far, from the start; done: all

    @property
    def partial(self) -> bool:
        """Processing, with a part of its tracks ready to download."""
        return self.state == PROCESSING and self.ready_seconds > 0

    @property
    def ended(self) -> bool:
        return self.state in (DONE, FAILED, CANCELLED)


@dataclass(frozen=True)
class Field:
    """One field of the status on the wire: its JSON name and schema, the proto field it is, and when it is shown."""

    name: str
    schema: dict
    description: str
    value: Callable[[SongState], Any]
    shown: Callable[[SongState], bool] = lambda song: True
    proto: str = ""  # the SongStatus field's name, when it differs

    @property
    def proto_name(self) -> str:
        return self.proto or self.name


def _when(*states: str) -> Callable[[SongState], bool]:
    return lambda song: song.state in states


OPTIONS_SCHEMA = {"type": "object", "properties": {spec.name: spec.schema() for spec in SPECS}}
FIELDS: tuple[Field, ...] = (
    Field("hash", {"type": "string"}, "SHA-224 hex digest of the MP3: names the song everywhere", lambda s: s.songhash,
          proto="songhash"),
    Field("state", {"type": "string", "enum": list(STATES)}, "queued, processing, done, failed or cancelled",
          lambda s: s.state),
    Field("options", OPTIONS_SCHEMA, "the options the job was accepted with, every one concrete: what runs",
          lambda s: s.options),
    Field("attempts", {"type": "integer"}, "attempts started so far", lambda s: s.attempts),
    Field("timestamps", {"type": "object", "additionalProperties": {"type": "string", "format": "date-time"}},
          "when each state was reached, by state name", lambda s: s.timestamps),
    Field("reason", {"type": "string"}, "why it failed, was cancelled, or was queued again; absent otherwise",
          lambda s: s.reason, lambda s: bool(s.reason)),
    Field("position", {"type": "integer", "nullable": True},
          "queued: 1 for the next song a worker takes; null while it is being handed to one", lambda s: s.position,
          _when(QUEUED)),
    Field("progress", {"type": "number"}, "processing: percent separated, 0 to 100; done: 100", lambda s: s.progress,
          _when(PROCESSING, DONE)),
    Field("worker", {"type": "string"}, "processing: the worker separating it", lambda s: s.worker, _when(PROCESSING)),
    Field("eta_seconds", {"type": "number", "nullable": True},
          "queued or processing: seconds until it is expected done, from the workers' measured speed and the work "
          "ahead of it", lambda s: None if s.eta_seconds is None else round(s.eta_seconds, 1),
          _when(QUEUED, PROCESSING)),
    Field("reconstruction_db", {"type": "number", "nullable": True},
          "done: how closely the tracks, as stored, sum to the song (at their level): signal-to-difference in dB; "
          "90 and more with the residual track in float32 WAV; null for songs separated before it was measured",
          lambda s: s.reconstruction_db, _when(DONE)),
    Field("ready_seconds", {"type": "number"},
          "processing: seconds of the song (of its range) whose tracks can be downloaded now, from its start: the "
          "track links serve that part; it only grows while one attempt runs (a retry starts again from 0); done: "
          "all of them", lambda s: round(s.ready_seconds, 3), _when(PROCESSING, DONE)),
    Field("tracks", {"type": "object", "additionalProperties": {"type": "string", "format": "uri"}},
          "done: each track's download link (gRPC: the track names); processing, once ready_seconds is above 0: the "
          "same links, serving the part ready so far", lambda s: s.tracks, lambda s: s.state == DONE or s.partial),
    Field("callback", {"type": "object", "required": ["state", "delivered", "attempts", "outcome"], "properties": {
              "state": {"type": "string", "enum": list(CALLBACK_STATES),
                        "description": "pending until the worker delivers it or gives up"},
              "delivered": {"type": "boolean"}, "attempts": {"type": "integer"},
              "outcome": {"type": "string", "description": "the last attempt's answer: 200, 503, timeout after 10 s, "
                                                           "refused: ..."}}},
          "this tenant's callback, once the song is done", lambda s: s.callback, lambda s: s.callback is not None),
)


def as_json(song: SongState, track_url: Callable[[str], str]) -> dict:
    """The status as REST answers it; `track_url` makes a track's download link."""
    body: dict = {}
    for item in FIELDS:
        if not item.shown(song):
            continue
        value = item.value(song)
        if item.name == "tracks":
            value = {track: track_url(track) for track in value}
        elif item.name == "callback":
            value = vars(value)
        body[item.name] = value
    return body


def schema() -> dict:
    """The status' JSON schema (OpenAPI 3)."""
    always = [item.name for item in FIELDS if item.shown is Field.shown]
    return {"type": "object", "required": always,
            "properties": {item.name: {**item.schema, "description": item.description} for item in FIELDS}}
