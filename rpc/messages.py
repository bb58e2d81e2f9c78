"""The contract's messages (msaas/v1, generated from proto/msaas/v1/separation.proto) to and from the values
`msaas.songs.Songs` takes and answers. Only shapes change here; every rule is in Songs."""

from __future__ import annotations

import datetime

from google.protobuf import json_format

from msaas.options import SPECS, Options
from msaas.songs import SongState
from msaas.status import CANCELLED, DONE, FAILED, PROCESSING, QUEUED
from msaas.v1 import separation_pb2 as pb

STATES = {
    QUEUED: pb.SongStatus.STATE_QUEUED,
    PROCESSING: pb.SongStatus.STATE_PROCESSING,
    DONE: pb.SongStatus.STATE_DONE,
    FAILED: pb.SongStatus.STATE_FAILED,
    CANCELLED: pb.SongStatus.STATE_CANCELLED,
}
JSON_INTEGERS = 2**53  # doubles hold every integer up to this exactly


def option_values(options: pb.Options) -> dict[str, object]:
    """The options a request sets, by the table's names; unset fields are the service's defaults."""
    return {spec.name: getattr(options, spec.name) for spec in SPECS if options.HasField(spec.name)}


def options_message(options: Options) -> pb.Options:
    return pb.Options(**{name: value for name, value in options.as_fields().items() if value is not None})


def callback_value(header: pb.SubmitHeader) -> dict | None:
    """The callback as REST's JSON would give it to `Songs.callback`, or None when the header has none."""
    if not header.HasField("callback"):
        return None
    data = json_format.MessageToDict(header.callback.data) if header.callback.HasField("data") else {}
    return {"url": header.callback.url, "data": _integral(data)}


def _integral(value: object) -> object:
    """Struct numbers are doubles: give back the integers a JSON client meant (`{"n": 1}`, not 1.0)."""
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral(item) for item in value]
    if isinstance(value, float) and value.is_integer() and abs(value) <= JSON_INTEGERS:
        return int(value)
    return value


def status_message(song: SongState) -> pb.SongStatus:
    message = pb.SongStatus(
        songhash=song.songhash,
        state=STATES[song.state],
        options=options_message(song.options),
        attempts=song.attempts,
        reason=song.reason,
        progress=song.progress,
        worker=song.worker,
    )
    for state, when in song.timestamps.items():
        message.timestamps[state].FromDatetime(datetime.datetime.fromisoformat(when))
    if song.position is not None:
        message.position = song.position
    if song.state == DONE:
        message.tracks.extend(song.tracks)
    if song.callback is not None:
        message.callback.CopyFrom(pb.CallbackOutcome(**song.callback))
    return message
