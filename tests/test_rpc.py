"""The gRPC API against real Redis and S3 servers, through a real grpcio client: the same service as REST,
the same rules (msaas/songs.py), the same refusals with the codes gRPC users expect."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from devstack.processes import free_port
from msaas.cli import exits
from msaas.options import Options
from msaas.songs import ENQUEUED
from msaas.v1 import separation_pb2 as pb
from rest import create_app
from rpc import create_server
from rpc.messages import options_message
from rpc.metrics import METHODS
from rpc_support import error_code, requests, stub
from support import ROOT, SHORT_SAMPLE, queued, serve, start_service, stored_result, wait_for

MP3 = SHORT_SAMPLE.read_bytes()
SONGHASH = hashlib.sha224(MP3).hexdigest()
Code = grpc.StatusCode


@pytest.fixture
def nothing_left(redis_client, store, settings):
    yield
    assert queued(settings) == 0
    assert list(store.client.list_objects(settings.queue_bucket)) == []


def refused(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        answer = call(*args, **kwargs)
        if hasattr(answer, "__next__"):  # a stream fails when read
            list(answer)
    return caught.value


# --- submitting ------------------------------------------------------------------------------------------


def test_a_song_sent_in_chunks_is_queued_once_whichever_api_sends_it(rpc, client, redis_client, settings, store):
    service = stub(rpc)
    answer = service.Submit(requests(MP3, chunk=1000))
    assert (answer.songhash, answer.reason, answer.queued) == (SONGHASH, ENQUEUED, True)
    assert store.has_input(SONGHASH)
    again = service.Submit(requests(MP3))
    assert not again.queued and again.reason == "Song already queued with these options; not queued again"
    rest = client.post("/apiv1/separate", data=MP3, content_type="audio/mpeg").get_json()
    assert (rest["hash"], rest["reason"]) == (SONGHASH, again.reason)
    assert queued(settings) == 1
    assert list(service.ListQueue(pb.ListQueueRequest()).songhashes) == [SONGHASH]


def test_a_song_queued_through_rest_is_not_queued_again_through_grpc(rpc, client, redis_client, settings):
    options = {"two_stems": "vocals", "format": "wav"}
    assert client.post("/apiv1/separate", data=MP3, content_type="audio/mpeg", query_string=options).status_code == 200
    answer = stub(rpc).Submit(requests(MP3, options=pb.Options(**options)))
    assert (answer.songhash, answer.queued) == (SONGHASH, False)
    assert "already queued" in answer.reason
    assert queued(settings) == 1
    status = stub(rpc).GetStatus(pb.StatusRequest(songhash=SONGHASH, options=pb.Options(**options)))
    assert status.state == pb.SongStatus.STATE_QUEUED and status.position == 1
    assert status.options == options_message(Options.resolve(options, "demucs_unittest").as_fields())
    assert "queued" in status.timestamps


def callback_with(url: str, data: dict) -> pb.Callback:
    callback = pb.Callback(url=url)
    callback.data.update(data)
    return callback


# Each case: the gRPC header's options and callback, and the same request to REST: a raw upload for a bad song,
# a JSON body (typed values, as gRPC's fields are) for bad options.
BAD_SUBMISSIONS = [
    ("empty song", b"", {}, None),
    ("text file", b"hello, I am a text file", {}, None),
    ("noise", os.urandom(20000), {}, None),
    ("frames then noise", MP3[:600], {}, None),
    ("unknown model", MP3, {"options": pb.Options(model="no_such_model")}, {"model": "no_such_model"}),
    ("unknown stem", MP3, {"options": pb.Options(two_stems="kazoo")}, {"two_stems": "kazoo"}),
    ("stem of another model", MP3, {"options": pb.Options(two_stems="piano")}, {"two_stems": "piano"}),
    ("unknown format", MP3, {"options": pb.Options(format="ogg")}, {"format": "ogg"}),
    ("bitrate", MP3, {"options": pb.Options(mp3_bitrate=100)}, {"mp3_bitrate": 100}),
    ("bitrate of wav", MP3, {"options": pb.Options(format="wav", mp3_bitrate=128)},
     {"format": "wav", "mp3_bitrate": 128}),
    ("overlap", MP3, {"options": pb.Options(overlap=0.95)}, {"overlap": 0.95}),
    ("callback scheme", MP3, {"callback": pb.Callback(url="ftp://example.com/x")},
     {"callback": {"url": "ftp://example.com/x"}}),
    ("callback not a url", MP3, {"callback": pb.Callback(url="not a url")}, {"callback": {"url": "not a url"}}),
    ("callback port", MP3, {"callback": pb.Callback(url="http://example.com:99999/")},
     {"callback": {"url": "http://example.com:99999/"}}),
    ("callback private", MP3, {"callback": pb.Callback(url="http://10.0.0.1/hook")},
     {"callback": {"url": "http://10.0.0.1/hook"}}),
    ("callback loopback", MP3, {"callback": pb.Callback(url="http://[::1]/hook")},
     {"callback": {"url": "http://[::1]/hook"}}),
    ("callback host with a space", MP3, {"callback": pb.Callback(url="http://a b/")},
     {"callback": {"url": "http://a b/"}}),
    *((f"callback data {number}", MP3, {"callback": callback_with("http://127.0.0.1:9/hook", {"x": [number]})},
       {"callback": {"url": "http://127.0.0.1:9/hook", "data": {"x": [number]}}})  # json.dumps writes NaN
      for number in (math.nan, math.inf, -math.inf)),
]


def rest_submit(client, song: bytes, fields: dict | None):
    if fields is None:
        return client.post("/apiv1/separate", data=song, content_type="audio/mpeg")
    body = {"mp3": base64.b64encode(song).decode(), **fields}
    return client.post("/apiv1/separate", data=json.dumps(body), content_type="application/json")


@pytest.mark.parametrize(("song", "header", "fields"), [case[1:] for case in BAD_SUBMISSIONS],
                         ids=[case[0] for case in BAD_SUBMISSIONS])
def test_every_submission_rest_refuses_is_invalid_argument_with_the_same_message(
    rpc, client, nothing_left, song, header, fields
):
    rest = rest_submit(client, song, fields)
    assert rest.status_code == 400
    error = refused(stub(rpc).Submit, requests(song, **header))
    assert error.code() == Code.INVALID_ARGUMENT
    assert (error_code(error), error.details()) == (rest.get_json()["error"], rest.get_json()["message"])


def test_the_header_goes_in_the_first_message_only(rpc, nothing_left):
    messages = list(requests(MP3, chunk=len(MP3) // 2))
    messages[1].header.CopyFrom(pb.SubmitHeader(options=pb.Options(format="wav")))
    error = refused(stub(rpc).Submit, iter(messages))
    assert error.code() == Code.INVALID_ARGUMENT and "first message only" in error.details()


def test_a_song_over_the_size_limit_is_resource_exhausted_and_leaves_nothing(settings, nothing_left):
    server = create_server(replace(settings, grpc_port=0, max_request_bytes=50_000), host="127.0.0.1")
    server.start()
    try:
        error = refused(stub(f"127.0.0.1:{server.port}").Submit, requests(MP3, chunk=10_000))
    finally:
        server.stop(0)
    assert error.code() == Code.RESOURCE_EXHAUSTED
    assert (error_code(error), error.details()) == ("too_large", "request body is larger than the limit of 50000 bytes")


def test_a_message_over_the_message_limit_is_refused(rpc, nothing_left):
    error = refused(stub(rpc).Submit, requests(b"x" * (1 << 20), chunk=1 << 20))
    assert error.code() == Code.RESOURCE_EXHAUSTED


def test_callback_data_keeps_its_integers(rpc, redis_client, settings):
    callback = pb.Callback(url="http://127.0.0.1:9/hook")
    callback.data.update({"n": 1, "ratio": 0.5, "tags": ["a", 2]})
    assert stub(rpc).Submit(requests(MP3, callback=callback)).queued
    # Kept with the tenant's claim on the song, as REST's JSON would have kept it: an integer stays one.
    raw = redis_client.hget(f"claim:open:{SONGHASH}", "callback")
    assert json.loads(raw)["data"] == {"n": 1, "ratio": 0.5, "tags": ["a", 2]}
    assert re.search(r'"n": 1[,}]', raw)


# --- reading and removing --------------------------------------------------------------------------------


def test_status_of_unknown_and_malformed_songs(rpc, client):
    error = refused(stub(rpc).GetStatus, pb.StatusRequest(songhash="0" * 56))
    rest = client.get(f"/apiv1/status/{'0' * 56}").get_json()
    assert (error.code(), error_code(error), error.details()) == (Code.NOT_FOUND, rest["error"], rest["message"])
    error = refused(stub(rpc).GetStatus, pb.StatusRequest(songhash="nope"))
    rest = client.get("/apiv1/status/nope").get_json()
    assert (error.code(), error.details()) == (Code.INVALID_ARGUMENT, rest["message"])


def test_a_track_streams_in_chunks_byte_identical_to_rest(rpc, client, store, redis_client, tmp_path):
    track = os.urandom(600_000)  # three chunks
    (tmp_path / "vocals.mp3").write_bytes(track)
    stored_result(redis_client, store, SONGHASH, {"vocals": tmp_path / "vocals.mp3"})
    parts = list(stub(rpc).DownloadTrack(pb.TrackRequest(songhash=SONGHASH, track="vocals")))
    info = parts[0].info
    assert (info.size, info.content_type, info.filename) == (len(track), "audio/mpeg", f"{SONGHASH}-vocals.mp3")
    assert [len(part.chunk) for part in parts[1:]] == [262144, 262144, 600_000 - 2 * 262144]
    assert b"".join(part.chunk for part in parts[1:]) == track == client.get(f"/apiv1/track/{SONGHASH}/vocals").data
    link = stub(rpc).GetTrackLink(pb.TrackRequest(songhash=SONGHASH, track="vocals.mp3")).url
    assert link.startswith("http://") and f"{SONGHASH}/default/7/vocals.mp3" in link

    error = refused(stub(rpc).DownloadTrack, pb.TrackRequest(songhash=SONGHASH, track="guitar"))
    rest = client.get(f"/apiv1/track/{SONGHASH}/guitar").get_json()
    assert (error.code(), error_code(error), error.details()) == (Code.NOT_FOUND, rest["error"], rest["message"])


def test_remove_track_and_song_and_cancel_answer_as_rest_does(rpc, client, store, tmp_path, redis_client, settings):
    service = stub(rpc)
    (tmp_path / "drums.mp3").write_bytes(b"drums")
    stored_result(redis_client, store, SONGHASH, {"drums": tmp_path / "drums.mp3"})
    removed = service.RemoveTrack(pb.TrackRequest(songhash=SONGHASH, track="drums.mp3"))
    assert (removed.songhash, removed.track, removed.reason) == (SONGHASH, "drums", "Track removed")
    error = refused(service.RemoveTrack, pb.TrackRequest(songhash=SONGHASH, track="drums"))
    assert error.code() == Code.NOT_FOUND and error_code(error) == "track_not_found"
    error = refused(service.RemoveTrack, pb.TrackRequest(songhash=SONGHASH, track="kazoo"))
    rest = client.delete(f"/apiv1/remove/{SONGHASH}/kazoo").get_json()
    assert (error.code(), error.details()) == (Code.INVALID_ARGUMENT, rest["message"])

    nothing = service.CancelSong(pb.SongRequest(songhash=SONGHASH))
    assert (nothing.cancelled, nothing.reason) == (0, "Nothing queued or processing for this song")
    service.Submit(requests(MP3))
    cancelled = service.CancelSong(pb.SongRequest(songhash=SONGHASH.upper()))
    assert (cancelled.songhash, cancelled.cancelled, cancelled.reason) == (SONGHASH, 1, "Song cancelled")
    assert queued(settings) == 0
    gone = service.RemoveSong(pb.SongRequest(songhash=SONGHASH))
    assert (gone.removed, gone.cancelled, gone.reason) == (1, 0, "Song removed")  # the input MP3 (the rest: above)
    assert not store.has_input(SONGHASH)
    error = refused(service.RemoveSong, pb.SongRequest(songhash="1" * 56))
    assert error.code() == Code.NOT_FOUND and error_code(error) == "song_not_found"


# --- watching --------------------------------------------------------------------------------------------


def test_a_watch_sends_each_change_and_ends_with_the_song(rpc, redis_client):
    service = stub(rpc)
    service.Submit(requests(MP3))
    watch = service.WatchStatus(pb.StatusRequest(songhash=SONGHASH), timeout=30)
    first = next(watch)
    assert first.state == pb.SongStatus.STATE_QUEUED and first.position == 1
    redis_client.hset(f"status:{SONGHASH}", "reason", "an attempt failed")  # any change is sent
    assert next(watch).reason == "an attempt failed"
    service.CancelSong(pb.SongRequest(songhash=SONGHASH))
    last = next(watch)
    assert last.state == pb.SongStatus.STATE_CANCELLED and last.reason == "cancelled by a client"
    assert list(watch) == []  # the stream ended with the song


def test_a_watch_stops_at_the_clients_deadline_and_when_it_cancels(settings):
    server = create_server(replace(settings, grpc_port=0), host="127.0.0.1")
    server.start()
    try:
        service = stub(f"127.0.0.1:{server.port}")
        service.Submit(requests(MP3))
        started = time.monotonic()
        watch = service.WatchStatus(pb.StatusRequest(songhash=SONGHASH), timeout=1.0)
        assert next(watch).state == pb.SongStatus.STATE_QUEUED
        error = refused(lambda: watch)
        assert error.code() == Code.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 5
        watch = service.WatchStatus(pb.StatusRequest(songhash=SONGHASH))
        assert next(watch).state == pb.SongStatus.STATE_QUEUED
        watch.cancel()
        counted = server.metrics.registry.get_sample_value
        wait_for(lambda: counted("msaas_grpc_requests_total", {"method": "WatchStatus", "code": "CANCELLED"}), 5,
                 "the cancelled watch to end on the server")
        assert counted("msaas_grpc_requests_total", {"method": "WatchStatus", "code": "DEADLINE_EXCEEDED"}) == 1
    finally:
        server.stop(0)


def test_watching_a_song_never_submitted_is_not_found(rpc):
    error = refused(stub(rpc).WatchStatus, pb.StatusRequest(songhash="2" * 56))
    assert error.code() == Code.NOT_FOUND and error_code(error) == "song_not_found"


# --- guards, health, reflection ---------------------------------------------------------------------------


@pytest.fixture
def keyed(settings):
    server = create_server(replace(settings, grpc_port=0, api_keys="k1,k2"), host="127.0.0.1")
    server.start()
    yield f"127.0.0.1:{server.port}"
    server.stop(0)


@pytest.mark.parametrize("metadata", [None, (("authorization", "Bearer wrong"),), (("authorization", "k1"),)],
                         ids=["no key", "wrong key", "no scheme"])
def test_without_a_valid_key_every_call_is_unauthenticated(keyed, metadata):
    error = refused(stub(keyed).ListQueue, pb.ListQueueRequest(), metadata=metadata)
    assert error.code() == Code.UNAUTHENTICATED and error_code(error) == "unauthorized"
    assert "authorization: Bearer <key>" in error.details()
    error = refused(stub(keyed).WatchStatus, pb.StatusRequest(songhash=SONGHASH), metadata=metadata)
    assert error.code() == Code.UNAUTHENTICATED


def test_with_a_valid_key_calls_pass_and_health_needs_none(keyed):
    assert stub(keyed).ListQueue(pb.ListQueueRequest(), metadata=(("authorization", "Bearer k2"),)).songhashes == []
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(keyed))
    assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING


def test_over_the_rate_limit_is_resource_exhausted_with_retry_after(settings):
    server = create_server(replace(settings, grpc_port=0, rate_limit_per_minute=2), host="127.0.0.1")
    server.start()
    try:
        service = stub(f"127.0.0.1:{server.port}")
        service.ListQueue(pb.ListQueueRequest())
        service.ListQueue(pb.ListQueueRequest())
        error = refused(service.ListQueue, pb.ListQueueRequest())
    finally:
        server.stop(0)
    assert error.code() == Code.RESOURCE_EXHAUSTED and error_code(error) == "too_many_requests"
    assert 0 < int(dict(error.trailing_metadata())["retry-after"]) <= 60


def test_guessing_keys_is_as_slow_as_the_rate_limit(settings):
    server = create_server(replace(settings, grpc_port=0, api_keys="k1", rate_limit_per_minute=2), host="127.0.0.1")
    server.start()
    try:
        service = stub(f"127.0.0.1:{server.port}")
        wrong = (("authorization", "Bearer guess"),)
        codes = [refused(service.ListQueue, pb.ListQueueRequest(), metadata=wrong).code() for _ in range(3)]
        right = refused(service.ListQueue, pb.ListQueueRequest(), metadata=(("authorization", "Bearer k1"),))
    finally:
        server.stop(0)
    assert codes == [Code.UNAUTHENTICATED, Code.UNAUTHENTICATED, Code.RESOURCE_EXHAUSTED]
    assert right.code() == Code.RESOURCE_EXHAUSTED  # held before its key is looked at, a right one included


def test_rest_and_grpc_share_one_rate_limit(settings):
    limited = replace(settings, grpc_port=0, rate_limit_per_minute=2)
    server = create_server(limited, host="127.0.0.1")
    server.start()
    rest_address, rest_server = serve(create_app(limited))
    try:
        assert urllib.request.urlopen(f"http://{rest_address}/apiv1/queue", timeout=10).status == 200
        service = stub(f"127.0.0.1:{server.port}")
        service.ListQueue(pb.ListQueueRequest())
        error = refused(service.ListQueue, pb.ListQueueRequest())
    finally:
        server.stop(0)
        rest_server.shutdown()
    assert error.code() == Code.RESOURCE_EXHAUSTED


def test_health_is_serving_only_while_redis_and_the_store_answer(rpc, settings):
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(rpc))
    for service in ("", "msaas.v1.SeparationService"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == 1
    server = create_server(replace(settings, grpc_port=0, redis_port=free_port()), host="127.0.0.1")
    server.start()
    try:
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
        answer = health.Check(health_pb2.HealthCheckRequest(service="msaas.v1.SeparationService"))
        assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
        error = refused(stub(f"127.0.0.1:{server.port}").ListQueue, pb.ListQueueRequest())
        assert error.code() == Code.UNAVAILABLE and "(Redis) is unreachable" in error.details()
    finally:
        server.stop(0)


def test_redis_down_while_submitting_is_unavailable(settings, store):
    server = create_server(replace(settings, grpc_port=0, redis_port=free_port()), host="127.0.0.1")
    server.start()
    try:
        error = refused(stub(f"127.0.0.1:{server.port}").Submit, requests(MP3))
    finally:
        server.stop(0)
    rest = create_app(replace(settings, redis_port=free_port())).test_client().post(
        "/apiv1/separate", data=MP3, content_type="audio/mpeg")
    assert error.code() == Code.UNAVAILABLE and rest.status_code == 503
    assert error_code(error) == rest.get_json()["error"] == "backend_unavailable"
    assert not store.has_input(SONGHASH)


def test_reflection_lists_the_services(rpc):
    reflection = reflection_pb2_grpc.ServerReflectionStub(grpc.insecure_channel(rpc))
    (answer,) = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {service.name for service in answer.list_services_response.service}
    assert {"msaas.v1.SeparationService", "grpc.health.v1.Health"} <= names
    (answer,) = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="msaas.v1.SeparationService")]))
    assert answer.file_descriptor_response.file_descriptor_proto


def test_calls_are_counted_by_method_and_code(settings):
    server = create_server(replace(settings, grpc_port=0), host="127.0.0.1")
    server.start()
    try:
        service = stub(f"127.0.0.1:{server.port}")
        service.Submit(requests(MP3))
        refused(service.GetStatus, pb.StatusRequest(songhash="nope"))
    finally:
        server.stop(0)
    registry = server.metrics.registry
    assert registry.get_sample_value("msaas_grpc_requests_total", {"method": "Submit", "code": "OK"}) == 1
    assert registry.get_sample_value(
        "msaas_grpc_requests_total", {"method": "GetStatus", "code": "INVALID_ARGUMENT"}) == 1
    assert registry.get_sample_value("msaas_jobs_enqueued_total") == 1
    assert registry.get_sample_value("msaas_upload_bytes_sum") == len(MP3)
    labels = {sample.labels["method"] for metric in registry.collect() for sample in metric.samples
              if sample.name == "msaas_grpc_requests_total"}
    assert labels <= set(METHODS)


# --- the real process, and the CLI ------------------------------------------------------------------------


def test_the_service_as_a_process_serves_metrics_and_stops_gracefully_on_sigterm(settings, tmp_path):
    port, metrics_port = free_port(), free_port()
    child = start_service("rpc", settings, tmp_path / "rpc.log", GRPC_PORT=str(port),
                          GRPC_METRICS_PORT=str(metrics_port), BIND_HOST="127.0.0.1")
    try:
        child.port = port
        child.wait_ready()
        address = f"127.0.0.1:{port}"
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(address))
        wait_for(lambda: health.Check(health_pb2.HealthCheckRequest(service="msaas.v1.SeparationService")).status
                 == health_pb2.HealthCheckResponse.SERVING, 30, "readiness")
        service = stub(address)
        service.Submit(requests(MP3))
        watch = service.WatchStatus(pb.StatusRequest(songhash=SONGHASH), timeout=60)
        assert next(watch).state == pb.SongStatus.STATE_QUEUED
        scraped = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        assert 'msaas_grpc_requests_total{code="OK",method="Submit"} 1.0' in scraped
        child.signal(signal.SIGTERM)
        error = refused(lambda: watch)  # the watch ends at once, saying so, so its client can call again
        assert error.code() == Code.UNAVAILABLE and "shutting down" in error.details()
        assert child.process.wait(15) == 0
    finally:
        child.stop()


def cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "msaas.cli", *arguments], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False, env={**os.environ, "MSAAS_API_KEY": ""})


def test_the_cli_over_grpc_answers_like_over_rest(rpc, rest):
    for server in (f"grpc://{rpc}", f"http://{rest}"):
        missing = cli("--server", server, "status", "3" * 56)
        assert missing.returncode == exits.NOT_FOUND, missing.stderr
        assert missing.stderr.startswith("msaas: song_not_found: song 333")
        bad = cli("--server", server, "status", "3" * 56, "--format", "wav", "--mp3-bitrate", "128")
        assert bad.returncode == exits.USAGE
        assert bad.stderr == "msaas: invalid_option: mp3_bitrate applies to format mp3 only\n"
        queued = cli("--server", server, "--json", "separate", "--no-wait", str(SHORT_SAMPLE))
        assert queued.returncode == 0 and json.loads(queued.stdout)["hash"] == SONGHASH
        assert cli("--server", server, "queue").stdout.split() == [SONGHASH]
        cancelled = cli("--server", server, "cancel", SONGHASH)
        assert cancelled.returncode == 0 and cancelled.stdout.strip() == "Song cancelled"
    gone = cli("--server", f"grpc://127.0.0.1:{free_port()}", "queue")
    assert gone.returncode == exits.SERVER and gone.stderr.startswith("msaas: unreachable: cannot reach grpc://")


def test_the_catalogue_is_the_same_on_both_apis(rpc, client):
    listed = json_format.MessageToDict(stub(rpc).ListModels(pb.ListModelsRequest()),
                                       preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    served = client.get("/apiv1/models").get_json()
    unset = [{name: value for name, value in model.items() if value is not None} for model in served["models"]]
    assert listed == {"models": unset}  # gRPC leaves an unmeasured cost unset where REST says null
    [default] = [model for model in served["models"] if model["default"]]
    assert default["name"] == "demucs_unittest" and default["stems"] == ["vocals", "drums", "bass", "other"]
    htdemucs = next(model for model in served["models"] if model["name"] == "htdemucs")
    assert htdemucs["engine"] == "demucs" and htdemucs["published"][0]["sdr"]["vocals"] > 0
