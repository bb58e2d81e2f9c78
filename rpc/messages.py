"""The contract's messages (msaas/v1, generated from proto/msaas/v1/separation.proto) to and from the values
`msaas.songs.Songs` takes and answers. Only shapes change here; every rule is in Songs."""

from __future__ import annotations

import datetime

from google.protobuf import struct_pb2

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
    data = _plain_struct(header.callback.data) if header.callback.HasField("data") else {}
    return {"url": header.callback.url, "data": data}


def _plain_struct(struct: struct_pb2.Struct) -> dict:
    return {key: _plain(value) for key, value in struct.fields.items()}


def _plain(value: struct_pb2.Value) -> object:
    """A Struct value as Python's JSON reader gives it, every number kept as it came, NaN and infinities too, for
    `Songs.callback` to judge as it judges REST's (json_format refuses them with an error of its own). Struct
    numbers are doubles: the integers a JSON client meant come back as integers (`{"n": 1}`, not 1.0)."""
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return _plain_struct(value.struct_value)
    if kind == "list_value":
        return [_plain(item) for item in value.list_value.values]
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() and abs(number) <= JSON_INTEGERS else number
    if kind in ("string_value", "bool_value"):
        return getattr(value, kind)
    return None  # null_value, or no kind set


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
