"""Tenants (issue 21) over gRPC: the three tenants of tests/test_tenants.py against the gRPC server. Another
tenant's song answers every call as an unknown one; identical uploads run one job; a tenant's cancel or remove
leaves the others' claims; each limit is RESOURCE_EXHAUSTED naming it, with retry-after; the AdminService is an
admin key's only; a key rotates without a failed call."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

import grpc
import pytest

from msaas.tenants import RELOAD_SECONDS
from msaas.v1 import separation_pb2 as pb
from msaas.v1 import separation_pb2_grpc as pb_grpc
from rpc import create_server
from rpc_support import error_code, requests
from support import SHORT_SAMPLE, queued, start_service, stored_result, wait_for
from test_tenants import ADMIN_KEY, KEYS, SONG, SONGHASH, tenants_file

Code = grpc.StatusCode
UNKNOWN = "0" * 56
DONE = "d" * 56  # a song of alice's separated already: its tracks stored, its status done


def key(tenant: str) -> tuple[tuple[str, str], ...]:
    """The call's metadata for `tenant` (or the admin)."""
    return (("authorization", f"Bearer {ADMIN_KEY if tenant == 'admin' else KEYS[tenant]}"),)


class Api:
    """Both services of one server, as each tenant calls them."""

    def __init__(self, address: str) -> None:
        channel = grpc.insecure_channel(address)
        self.songs = pb_grpc.SeparationServiceStub(channel)
        self.admin = pb_grpc.AdminServiceStub(channel)

    def submit(self, tenant: str, mp3: bytes = SONG) -> pb.SubmitResponse:
        return self.songs.Submit(requests(mp3), metadata=key(tenant))


def serve_rpc(settings, path):
    server = create_server(replace(settings, tenants_file=path, grpc_port=0), host="127.0.0.1")
    server.start()
    return server


@pytest.fixture
def api(settings, tmp_path):
    path = tmp_path / "tenants.json"
    tenants_file(path)
    server = serve_rpc(settings, path)
    yield Api(f"127.0.0.1:{server.port}")
    server.stop(grace=0)


def refused(call, request, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        answer = call(request, **kwargs)
        if hasattr(answer, "__next__"):  # a stream fails when read
            list(answer)
    return caught.value


SONG_CALLS = {
    "GetStatus": lambda songhash: pb.StatusRequest(songhash=songhash),
    "WatchStatus": lambda songhash: pb.StatusRequest(songhash=songhash),
    "DownloadTrack": lambda songhash: pb.TrackRequest(songhash=songhash, track="vocals"),
    "GetTrackLink": lambda songhash: pb.TrackRequest(songhash=songhash, track="vocals.mp3"),
    "RemoveTrack": lambda songhash: pb.TrackRequest(songhash=songhash, track="vocals"),
    "RemoveSong": lambda songhash: pb.SongRequest(songhash=songhash),
}


def test_another_tenants_song_answers_every_call_exactly_as_an_unknown_one(api, redis_client, store):
    assert api.submit("alice").queued
    stored_result(redis_client, store, DONE, {"vocals": SHORT_SAMPLE}, tenant="alice")
    for theirs in (SONGHASH, DONE):  # queued, and done with its tracks
        for name, request in SONG_CALLS.items():
            call = getattr(api.songs, name)
            mine, nobodys = (refused(call, request(songhash), metadata=key("bob"), timeout=30)
                             for songhash in (theirs, UNKNOWN))
            assert mine.code() == nobodys.code() == Code.NOT_FOUND, (name, mine.details())
            assert error_code(mine) == error_code(nobodys) and error_code(mine), name
            assert mine.details().replace(theirs, UNKNOWN) == nobodys.details(), name
        mine, nobodys = (api.songs.CancelSong(pb.SongRequest(songhash=songhash), metadata=key("bob"))
                         for songhash in (theirs, UNKNOWN))
        assert (mine.cancelled, mine.reason) == (nobodys.cancelled, nobodys.reason) == (0, nobodys.reason)
    assert api.songs.ListQueue(pb.ListQueueRequest(), metadata=key("bob")) == pb.ListQueueResponse()
    # Still there for their owner, as they were.
    assert list(api.songs.ListQueue(pb.ListQueueRequest(), metadata=key("alice")).songhashes) == [SONGHASH]
    status = api.songs.GetStatus(pb.StatusRequest(songhash=SONGHASH), metadata=key("alice"))
    assert status.state == pb.SongStatus.STATE_QUEUED and status.position == 1
    track = b"".join(part.chunk for part in api.songs.DownloadTrack(
        pb.TrackRequest(songhash=DONE, track="vocals"), metadata=key("alice")))
    assert track == SHORT_SAMPLE.read_bytes()


def test_a_cancel_or_remove_by_one_claimant_leaves_the_song_to_the_other(api, redis_client, store, settings):
    assert api.submit("alice").queued
    again = api.submit("bob")
    assert not again.queued and "already queued" in again.reason
    assert queued(settings) == 1  # one job for both
    assert api.songs.CancelSong(pb.SongRequest(songhash=SONGHASH), metadata=key("alice")).cancelled == 1
    statuses = {tenant: api.songs.GetStatus(pb.StatusRequest(songhash=SONGHASH), metadata=key(tenant)).state
                for tenant in ("alice", "bob")}
    assert statuses == {"alice": pb.SongStatus.STATE_CANCELLED, "bob": pb.SongStatus.STATE_QUEUED}
    assert queued(settings) == 1
    assert refused(api.songs.GetStatus, pb.StatusRequest(songhash=SONGHASH), metadata=key("carol")).code() == \
        Code.NOT_FOUND

    for tenant in ("alice", "bob"):  # a done song both hold
        stored_result(redis_client, store, DONE, {"vocals": SHORT_SAMPLE}, tenant=tenant)
    removed = api.songs.RemoveSong(pb.SongRequest(songhash=DONE), metadata=key("alice"))
    assert removed.removed == 0  # bob still holds it: nothing goes from the store
    assert refused(api.songs.GetStatus, pb.StatusRequest(songhash=DONE), metadata=key("alice")).code() == \
        Code.NOT_FOUND
    track = pb.TrackRequest(songhash=DONE, track="vocals")
    assert b"".join(part.chunk for part in api.songs.DownloadTrack(track, metadata=key("bob"))) == \
        SHORT_SAMPLE.read_bytes()
    assert api.songs.RemoveSong(pb.SongRequest(songhash=DONE), metadata=key("bob")).removed == 1  # the last claim
    assert list(store.client.list_objects(settings.output_bucket, recursive=True)) == []


@pytest.mark.demucs
def test_identical_uploads_of_two_tenants_separate_once_and_both_download_them(api, settings, tmp_path):
    assert api.submit("alice").queued and not api.submit("bob").queued
    worker = start_service("worker", settings, tmp_path / "worker.log")
    try:
        for tenant in ("alice", "bob"):
            watch = api.songs.WatchStatus(pb.StatusRequest(songhash=SONGHASH), metadata=key(tenant), timeout=120)
            assert [status.state for status in watch][-1] == pb.SongStatus.STATE_DONE
    finally:
        worker.stop()
    assert (tmp_path / "worker.log").read_text().count("separated in") == 1
    track = pb.TrackRequest(songhash=SONGHASH, track="vocals")
    alices, bobs = (b"".join(part.chunk for part in api.songs.DownloadTrack(track, metadata=key(tenant)))
                    for tenant in ("alice", "bob"))
    assert alices == bobs and len(alices) > 10_000
    assert refused(api.songs.DownloadTrack, track, metadata=key("carol")).code() == Code.NOT_FOUND
    usage = api.songs.GetUsage(pb.UsageRequest(), metadata=key("alice"))
    assert usage.tenant == "alice" and usage.songs == 1 and usage.audio_seconds > 7  # alice's job ran it
    assert api.songs.GetUsage(pb.UsageRequest(), metadata=key("bob")).songs == 1


def test_each_limit_is_resource_exhausted_naming_it_with_retry_after(settings, tmp_path):
    path = tmp_path / "tenants.json"
    tenants_file(path, alice={"requests_per_minute": 3}, bob={"songs_queued": 1},
                 carol={"audio_minutes_per_day": 0.2})  # 12 s a day: one 8 s song
    server = serve_rpc(settings, path)
    try:
        api = Api(f"127.0.0.1:{server.port}")
        for _ in range(3):
            api.songs.ListQueue(pb.ListQueueRequest(), metadata=key("alice"))
        over = refused(api.songs.ListQueue, pb.ListQueueRequest(), metadata=key("alice"))
        assert (over.code(), error_code(over)) == (Code.RESOURCE_EXHAUSTED, "too_many_requests")
        assert 0 < int(dict(over.trailing_metadata())["retry-after"]) <= 60
        api.songs.ListQueue(pb.ListQueueRequest(), metadata=key("bob"))  # alice's limit is alice's

        assert api.submit("bob").queued
        over = refused(api.songs.Submit, requests(SONG + b"\0" * 4), metadata=key("bob"))
        assert (over.code(), error_code(over)) == (Code.RESOURCE_EXHAUSTED, "songs_queued")
        assert "1 songs queued" in over.details() and int(dict(over.trailing_metadata())["retry-after"]) > 0

        assert api.submit("carol").songhash == SONGHASH  # a claim on bob's queued song: its 8 s count for carol
        over = refused(api.songs.Submit, requests(SONG + b"\0" * 4), metadata=key("carol"))
        assert (over.code(), error_code(over)) == (Code.RESOURCE_EXHAUSTED, "audio_minutes_per_day")
        assert 0 < int(dict(over.trailing_metadata())["retry-after"]) <= 86400
    finally:
        server.stop(grace=0)


def test_the_admin_service_is_an_admin_keys_and_usage_each_tenants_own(api, settings):
    for tenant in (*KEYS, None):
        metadata = key(tenant) if tenant else ()
        for name, request in (("ListDeadLetters", pb.ListDeadLettersRequest()), ("ListUsage", pb.UsageRequest()),
                              ("GetDeadLetter", pb.DeadLetterRequest(id="x")),
                              ("RetryDeadLetter", pb.DeadLetterRequest(id="x")),
                              ("PurgeDeadLetters", pb.DeadLetterRequest())):
            error = refused(getattr(api.admin, name), request, metadata=metadata)
            assert (error.code(), error_code(error)) == (Code.UNAUTHENTICATED, "unauthorized"), (tenant, name)
    wrong = refused(api.songs.ListQueue, pb.ListQueueRequest(), metadata=(("authorization", "Bearer nope"),))
    assert wrong.code() == Code.UNAUTHENTICATED
    assert api.admin.ListDeadLetters(pb.ListDeadLettersRequest(), metadata=key("admin")) == \
        pb.ListDeadLettersResponse()
    missing = refused(api.admin.GetDeadLetter, pb.DeadLetterRequest(id="x"), metadata=key("admin"))
    assert (missing.code(), error_code(missing)) == (Code.NOT_FOUND, "dead_letter_not_found")
    api.submit("carol")
    usage = api.songs.GetUsage(pb.UsageRequest(), metadata=key("carol"))
    assert (usage.tenant, usage.songs, usage.audio_seconds, usage.cpu_seconds) == ("carol", 1, 0, 0)
    assert api.songs.GetUsage(pb.UsageRequest(), metadata=key("bob")).songs == 0
    every = api.admin.ListUsage(pb.UsageRequest(), metadata=key("admin")).tenants
    assert set(every) == {"alice", "bob", "carol", "open"} and every["carol"].songs == 1


def test_a_key_rotates_without_a_failed_call(settings, tmp_path):
    """Tenants are read again when the file changes: add the new key, move the client to it, drop the old one."""
    path = tmp_path / "tenants.json"
    tenants_file(path)
    server = serve_rpc(settings, path)
    api = Api(f"127.0.0.1:{server.port}")
    now = {"key": KEYS["alice"]}
    codes: list[Code] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                api.songs.ListQueue(pb.ListQueueRequest(), metadata=(("authorization", f"Bearer {now['key']}"),))
                codes.append(Code.OK)
            except grpc.RpcError as error:
                codes.append(error.code())
            time.sleep(0.05)

    def answers(value: str) -> Code:
        try:
            api.songs.ListQueue(pb.ListQueueRequest(), metadata=(("authorization", f"Bearer {value}"),))
            return Code.OK
        except grpc.RpcError as error:
            return error.code()

    calling = threading.Thread(target=client)
    calling.start()
    try:
        both = json.loads(path.read_text())
        both["tenants"][0]["keys"] = [KEYS["alice"], "alice-key-2"]
        path.write_text(json.dumps(both))
        wait_for(lambda: answers("alice-key-2") == Code.OK, 3 * RELOAD_SECONDS, "the new key to be taken")
        now["key"] = "alice-key-2"
        time.sleep(0.5)
        both["tenants"][0]["keys"] = ["alice-key-2"]
        path.write_text(json.dumps(both))
        wait_for(lambda: answers(KEYS["alice"]) == Code.UNAUTHENTICATED, 3 * RELOAD_SECONDS,
                 "the old key to be dropped")
        time.sleep(0.5)
    finally:
        stop.set()
        calling.join()
        server.stop(grace=0)
    assert len(codes) > 20 and set(codes) == {Code.OK}
