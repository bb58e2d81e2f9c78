"""One definition of the song status (msaas/shapes.py): the proto's SongStatus, REST's JSON and OpenAPI schema, and
the CLI's reading of a gRPC status are held to the table of its fields."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlsplit

import pytest
import requests
from google.protobuf.descriptor import FieldDescriptor
from test_faults import variant

from msaas import shapes
from msaas.cli.grpc_client import _status as grpc_status
from msaas.naming import songhash_of
from msaas.shapes import FIELDS, CallbackState, SongState
from msaas.v1 import separation_pb2 as pb
from rest.openapi import document
from rpc_support import stub
from support import start_service, wait_for

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


@pytest.mark.demucs
def test_every_status_field_reads_the_same_on_both_apis(settings, rest, rpc, store, tmp_path, callback_receiver):
    """A song with a callback followed from queued to done, and one that fails: each status, as REST answers it and as
    gRPC's GetStatus answers it (read back as the CLI reads it), is the same, field for field, and between them the
    states show every field of the table."""
    good = variant("shapes-good")
    bad = variant("shapes-bad")
    slow = {"shifts": 6}  # long enough to be seen processing
    for mp3 in (good, bad):
        answer = requests.post(f"http://{rest}/apiv1/separate", params={"callback_url": callback_receiver.url, **slow},
                               data=mp3, headers={"Content-Type": "audio/mpeg"})
        assert answer.status_code == 200, answer.text
    store.remove_input(songhash_of(bad))  # its attempts fail: "the input ... is missing"
    seen: set[str] = set()

    def rest_status(songhash: str) -> dict:
        served = requests.get(f"http://{rest}/apiv1/status/{songhash}", params=slow).json()
        return {name: value for name, value in served.items() if name != "eta_seconds"}

    def both(songhash: str) -> dict:
        # The song moves on while it is read: compare the gRPC answer read between two REST answers that agree.
        for _ in range(20):
            served = requests.get(f"http://{rest}/apiv1/status/{songhash}", params=slow).json()
            answered = grpc_status(stub(rpc).GetStatus(pb.StatusRequest(songhash=songhash,
                                                                        options=pb.Options(**slow))))
            if rest_status(songhash) == {name: value for name, value in served.items() if name != "eta_seconds"}:
                break
        # REST links tracks by absolute URL, the CLI reads gRPC's track names as REST paths: the same tracks.
        if "tracks" in served:
            assert {track: urlsplit(url).path for track, url in served["tracks"].items()} == {
                track: urlsplit(path).path for track, path in answered.pop("tracks").items()}
            served = {name: value for name, value in served.items() if name != "tracks"} | {"tracks": None}
            answered["tracks"] = None
        if "eta_seconds" in served:  # an estimate, read twice a moment apart
            assert abs((served.pop("eta_seconds") or 0) - (answered.pop("eta_seconds") or 0)) < 30
            seen.add("eta_seconds")
        assert served == answered
        seen.update(served)
        return served

    assert both(songhash_of(good))["state"] == "queued"
    worker = start_service("worker", replace(settings, max_attempts=1), tmp_path / "worker.log")
    try:
        wait_for(lambda: both(songhash_of(good)).get("progress", 0) > 0, 120, "the song to be processing")
        wait_for(lambda: (s := both(songhash_of(good)))["state"] == "done" and s.get("callback", {}).get("state")
                 == "delivered", 120, "the song done and its callback delivered")
        wait_for(lambda: both(songhash_of(bad))["state"] == "failed", 120, "the other song to fail")
    finally:
        worker.stop()
    assert {item.name for item in FIELDS} <= seen
