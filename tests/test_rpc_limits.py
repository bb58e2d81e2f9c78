"""The gRPC service against clients that hold calls open (issue 20): streams that send a little and stall,
hundreds of watches, a header of hundreds of KiB. A real server (grpc.aio, in this process) against real Redis
and S3 servers, through real grpcio clients: health is always answered, other clients are served, and every
bound is stated and answered RESOURCE_EXHAUSTED past it."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from msaas.v1 import separation_pb2 as pb
from msaas.v1 import separation_pb2_grpc as pb_grpc
from rest.limits import MAX_FIELD_BYTES
from rpc import create_server
from rpc.streams import MAX_HEADER_BYTES
from rpc_support import error_code, requests, stub
from support import SHORT_SAMPLE, wait_for

MP3 = SHORT_SAMPLE.read_bytes()
SONGHASH = hashlib.sha224(MP3).hexdigest()
Code = grpc.StatusCode
SERVING = health_pb2.HealthCheckResponse.SERVING
READINESS = "msaas.v1.SeparationService"


@pytest.fixture
def serve_rpc(settings) -> Iterator:
    """`serve_rpc(**settings)`: a server with these settings changed, on a free port; yields its address."""
    servers = []

    def serve(**changes) -> str:
        server = create_server(replace(settings, grpc_port=0, **changes), host="127.0.0.1")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{server.port}"

    yield serve
    for server in servers:
        server.stop(0)


class Stalled:
    """`count` Submit streams from one channel that each send a 1 KB chunk, then nothing until released."""

    def __init__(self, address: str, count: int) -> None:
        self.release = threading.Event()
        self.channel = grpc.insecure_channel(address)
        service = pb_grpc.SeparationServiceStub(self.channel)
        self.calls = [service.Submit.future(self._messages()) for _ in range(count)]

    def _messages(self) -> Iterator[pb.SubmitRequest]:
        yield pb.SubmitRequest(header=pb.SubmitHeader(), chunk=b"\xff" * 1000)
        self.release.wait(120)

    def errors(self, timeout: float) -> list[grpc.RpcError]:
        return [call.exception(timeout) for call in self.calls]

    def close(self) -> None:
        self.release.set()
        for call in self.calls:
            call.cancel()
        self.channel.close()


def health_of(address: str, service: str = "") -> int:
    """The health service's answer, from a fresh channel as a probe has it."""
    with grpc.insecure_channel(address) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        return check(health_pb2.HealthCheckRequest(service=service), timeout=3).status


def wait_until_held(address: str, stalled: Stalled) -> None:
    """Once the server holds the stalled calls, a call of this client queues behind none of them."""
    wait_for(lambda: all(not call.done() for call in stalled.calls), 5, "the stalled calls to be open")
    stub(address).ListQueue(pb.ListQueueRequest(), timeout=10)


# --- stalled client streams ------------------------------------------------------------------------------


def test_130_stalled_submit_streams_leave_health_and_other_calls_answered(serve_rpc):
    address = serve_rpc()
    assert stub(address).Submit(requests(MP3)).queued
    stalled = Stalled(address, 130)
    try:
        wait_until_held(address, stalled)
        for _ in range(5):
            assert health_of(address) == SERVING
            assert health_of(address, READINESS) == SERVING
            status = stub(address).GetStatus(pb.StatusRequest(songhash=SONGHASH), timeout=5)
            assert status.state == pb.SongStatus.STATE_QUEUED
        assert not any(call.done() for call in stalled.calls)  # all 130 held, none refused
    finally:
        stalled.close()


def test_a_stalled_submit_stream_is_ended_at_the_minimum_rate_and_its_spool_file_removed(serve_rpc, settings):
    # 1000 bytes, then nothing: at 256 KiB/s after 1 s, the next chunk is due 2 s in.
    address = serve_rpc(body_grace_seconds=1.0, body_min_rate=256 * 1024)
    stalled = Stalled(address, 5)
    try:
        errors = stalled.errors(timeout=30)
    finally:
        stalled.close()
    assert {(error.code(), error_code(error)) for error in errors} == {(Code.DEADLINE_EXCEEDED, "request_timeout")}
    assert "too slowly" in errors[0].details() and "BODY_MIN_RATE" in errors[0].details()
    assert list(settings.work_dir.rglob("*.mp3")) == []  # every spool file removed
    answer = stub(address).Submit(requests(MP3, chunk=64 * 1024))  # a client at a steady pace is served
    assert answer.songhash == SONGHASH


def test_calls_past_the_bound_per_client_are_resource_exhausted_naming_it_and_health_answers(serve_rpc):
    address = serve_rpc(grpc_max_calls_per_client=10)
    stalled = Stalled(address, 10)
    try:
        wait_for(lambda: _refused_code(address) == Code.RESOURCE_EXHAUSTED, 10, "the 11th call to be refused")
        error = _refusal(address)
        assert error_code(error) == "too_many_calls" and "GRPC_MAX_CALLS_PER_CLIENT" in error.details()
        assert health_of(address) == SERVING and health_of(address, READINESS) == SERVING
    finally:
        stalled.close()
    wait_for(lambda: _refused_code(address) is None, 10, "calls to pass again once the stalled ones ended")


def _refusal(address: str) -> grpc.RpcError | None:
    try:
        stub(address).ListQueue(pb.ListQueueRequest(), timeout=5)
    except grpc.RpcError as error:
        return error
    return None


def _refused_code(address: str) -> grpc.StatusCode | None:
    error = _refusal(address)
    return None if error is None else error.code()


# --- watches ---------------------------------------------------------------------------------------------


def open_watches(address: str, count: int) -> tuple[grpc.Channel, list]:
    channel = grpc.insecure_channel(address)
    service = pb_grpc.SeparationServiceStub(channel)
    return channel, [service.WatchStatus(pb.StatusRequest(songhash=SONGHASH), timeout=60) for _ in range(count)]


def first_answers(watches: list) -> list:
    """Each watch's first status, or its error, read side by side."""
    def first(watch):
        try:
            return next(watch)
        except grpc.RpcError as error:
            return error

    with ThreadPoolExecutor(32) as pool:
        return list(pool.map(first, watches))


def test_200_watches_of_one_queued_song_are_all_served_and_end_with_it_while_health_answers(serve_rpc):
    address = serve_rpc()
    service = stub(address)
    service.Submit(requests(MP3))
    channel, watches = open_watches(address, 200)
    try:
        firsts = first_answers(watches)
        assert [getattr(first, "state", first) for first in firsts] == [pb.SongStatus.STATE_QUEUED] * 200
        assert health_of(address) == SERVING and health_of(address, READINESS) == SERVING
        assert service.GetStatus(pb.StatusRequest(songhash=SONGHASH), timeout=5).position == 1
        service.CancelSong(pb.SongRequest(songhash=SONGHASH), timeout=5)
        lasts = first_answers(watches)
        assert {last.state for last in lasts} == {pb.SongStatus.STATE_CANCELLED}
        assert all(list(watch) == [] for watch in watches)  # every stream ended with the song
    finally:
        channel.close()


def test_watches_past_the_bound_are_resource_exhausted_naming_it(serve_rpc):
    address = serve_rpc(grpc_max_watches=50)
    stub(address).Submit(requests(MP3))
    channel, watches = open_watches(address, 60)
    try:
        firsts = first_answers(watches)
        served = [first for first in firsts if isinstance(first, pb.SongStatus)]
        refused = [first for first in firsts if isinstance(first, grpc.RpcError)]
        assert (len(served), len(refused)) == (50, 10)
        assert {(error.code(), error_code(error)) for error in refused} == {(Code.RESOURCE_EXHAUSTED, "too_many_calls")}
        assert "GRPC_MAX_WATCHES" in refused[0].details()
        assert health_of(address) == SERVING
        for watch in watches[:20]:
            watch.cancel()
        wait_for(lambda: not isinstance(first_answers(open_watches(address, 1)[1])[0], grpc.RpcError), 10,
                 "a new watch to be served once others ended")
    finally:
        channel.close()


# --- the header ------------------------------------------------------------------------------------------


def test_the_header_is_held_to_rests_size_for_fields(serve_rpc, client):
    assert MAX_HEADER_BYTES == MAX_FIELD_BYTES
    callback = pb.Callback(url="http://127.0.0.1:9/hook")
    callback.data.update({"blob": "x" * 500 * 1024})
    with pytest.raises(grpc.RpcError) as caught:
        stub(serve_rpc()).Submit(requests(MP3, chunk=1000, callback=callback), timeout=30)
    error = caught.value
    rest = client.post("/apiv1/separate", json={"mp3": "", "callback": {"url": callback.url, "data": {
        "blob": "x" * 500 * 1024}}})
    assert rest.status_code == 413
    assert (error.code(), error_code(error)) == (Code.RESOURCE_EXHAUSTED, rest.get_json()["error"])
    assert "64 KiB" in error.details()


# --- messages that do not parse, and the log bus ---------------------------------------------------------


def test_a_message_that_does_not_parse_is_invalid_argument_not_an_internal_error(serve_rpc, nothing_left):
    channel = grpc.insecure_channel(serve_rpc())
    submit = channel.stream_unary("/msaas.v1.SeparationService/Submit", request_serializer=bytes,
                                  response_deserializer=pb.SubmitResponse.FromString)
    header = pb.SubmitRequest(header=pb.SubmitHeader(callback=pb.Callback(url="http://e.com/AAAA")))
    bad_utf8 = header.SerializeToString().replace(b"AAAA", b"\xff\xfe\xfd\xfc")  # a string field must be UTF-8
    get_status = channel.unary_unary("/msaas.v1.SeparationService/GetStatus", request_serializer=bytes,
                                     response_deserializer=pb.SongStatus.FromString)
    for call, request in ((submit, iter([bad_utf8, pb.SubmitRequest(chunk=MP3).SerializeToString()])),
                          (get_status, b"\xff\xff\xff\xff")):  # a corrupt wire format
        with pytest.raises(grpc.RpcError) as caught:
            call(request, timeout=10)
        assert (caught.value.code(), error_code(caught.value)) == (Code.INVALID_ARGUMENT, "invalid_message")
        assert "does not parse" in caught.value.details()


@pytest.fixture
def nothing_left(redis_client, settings):
    yield
    assert redis_client.llen(settings.worker_queue) == 0


def test_log_lines_still_reach_the_log_bus_written_off_the_event_loop(serve_rpc, redis_client, settings):
    stub(serve_rpc()).Submit(requests(MP3))
    wait_for(lambda: any('"service": "rpc"' in line and f"song {SONGHASH} enqueued" in line
                         for line in redis_client.lrange(settings.log_list, 0, -1)), 10, "the log line on the bus")
