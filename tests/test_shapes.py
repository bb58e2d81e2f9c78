"""One definition of the song status (msaas/shapes.py): the proto's SongStatus, REST's JSON and OpenAPI schema, and
the CLI's reading of a gRPC status are held to the table of its fields."""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor

from msaas import shapes
from msaas.shapes import FIELDS, CallbackState, SongState
from msaas.v1 import separation_pb2 as pb
from rest.openapi import document

SCALARS = {"string": FieldDescriptor.TYPE_STRING, "integer": FieldDescriptor.TYPE_INT32,
           "number": FieldDescriptor.TYPE_DOUBLE, "boolean": FieldDescriptor.TYPE_BOOL}


def test_every_status_field_is_a_proto_field_of_the_same_kind_and_back():
    proto = {field.name: field for field in pb.SongStatus.DESCRIPTOR.fields}
    assert {item.proto_name for item in FIELDS} == set(proto)
    for item in FIELDS:
        field, kind = proto[item.proto_name], item.schema.get("type")
        if item.name == "state":
            assert field.enum_type.name == "State"
            assert [f"STATE_{state.upper()}" for state in shapes.STATES] == [
                value.name for value in field.enum_type.values][1:]
        elif item.name == "options":
            assert field.message_type.name == "Options"
        elif item.name == "timestamps":
            assert field.message_type.GetOptions().map_entry
        elif item.name == "tracks":
            assert field.is_repeated and field.type == FieldDescriptor.TYPE_STRING
        elif item.name == "callback":
            callback = {name: SCALARS[schema["type"]] for name, schema in item.schema["properties"].items()}
            assert {f.name: f.type for f in field.message_type.fields} == callback
            assert set(item.schema["properties"]) == set(vars(CallbackState("pending", False, 0, "")))
        else:
            assert field.type == SCALARS[kind], item.name
            # A field absent from REST's JSON in some states is optional in the proto, or reads as its zero value.
            if item.schema.get("nullable"):
                assert field.has_presence, item.name


def test_rest_documents_the_status_from_the_same_table():
    status = document()["paths"]["/apiv1/status/{songhash}"]["get"]["responses"]["200"]["content"]
    assert status["application/json"]["schema"] == shapes.schema()
    assert set(shapes.schema()["properties"]) == {item.name for item in FIELDS}


def test_each_field_is_shown_in_the_states_it_belongs_to():
    def song(state: str, **fields) -> dict:
        return shapes.as_json(SongState("a" * 56, state, {"model": "m"}, ("vocals",), **fields), lambda t: f"/t/{t}")

    assert set(song("queued", position=3)) == {"hash", "state", "options", "attempts", "timestamps", "position",
                                               "eta_seconds"}
    assert set(song("processing", progress=40.0, worker="w")) == {
        "hash", "state", "options", "attempts", "timestamps", "progress", "worker", "eta_seconds", "ready_seconds"}
    # Once a part is ready, the track links serve it.
    assert song("processing", ready_seconds=13.65)["tracks"] == {"vocals": "/t/vocals"}
    done = song("done", callback=CallbackState("delivered", True, 1, "200"), ready_seconds=8.0)
    assert done["tracks"] == {"vocals": "/t/vocals"} and done["ready_seconds"] == 8.0
    assert done["callback"] == {"state": "delivered", "delivered": True, "attempts": 1, "outcome": "200"}
    assert song("failed", reason="boom")["reason"] == "boom"
