"""The contract's messages (msaas/v1, generated from proto/msaas/v1/separation.proto) to and from the values
`msaas.songs.Songs` takes and answers. Only shapes change here; every rule is in Songs."""

from __future__ import annotations

import datetime

from google.protobuf import struct_pb2

from msaas import shapes
from msaas.options import SPECS
from msaas.shapes import CANCELLED, DONE, FAILED, PROCESSING, QUEUED, SongState
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


def options_message(options: dict[str, object]) -> pb.Options:
    """Options by name (`Options.as_fields`) as the proto's message; those that are None are left unset."""
    return pb.Options(**{name: value for name, value in options.items() if value is not None})


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
    """The status as the proto's SongStatus, field by field from the shape's table (msaas/shapes.py): every field
    REST shows in this state, and only those."""
    message = pb.SongStatus()
    for item in shapes.FIELDS:
        if not item.shown(song):
            continue
        value, name = item.value(song), item.proto_name
        if value is None:
            continue  # an optional field left unset (a position while a worker is being handed the song)
        if item.name == "state":
            message.state = STATES[value]
        elif item.name == "options":
            message.options.CopyFrom(options_message(value))
        elif item.name == "timestamps":
            for state, when in value.items():
                message.timestamps[state].FromDatetime(datetime.datetime.fromisoformat(when))
        elif item.name == "tracks":
            message.tracks.extend(value)
        elif item.name == "callback":
            message.callback.CopyFrom(pb.CallbackOutcome(**vars(value)))
        else:
            setattr(message, name, value)
    return message


def dead_letter_message(letter: dict) -> pb.DeadLetter:
    """A dead letter (`DeadLetter.as_json`, as REST shows it) as the proto's message."""
    message = pb.DeadLetter(**{name: letter[name] or "" for name in ("id", "songhash", "reason", "last_worker",
                                                                     "tenant", "job")}, attempts=letter["attempts"])
    message.buried_at.FromDatetime(datetime.datetime.fromisoformat(letter["buried_at"]))
    return message


def usage_message(tenant: str, used: dict[str, float]) -> pb.Usage:
    return pb.Usage(tenant=tenant, **used)
