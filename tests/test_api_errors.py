"""Every bad input gets a 4xx JSON error that says what is wrong, and leaves nothing behind."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import replace

import pytest

from devstack.processes import free_port
from rest import create_app
from support import SHORT_SAMPLE, queued

MP3 = SHORT_SAMPLE.read_bytes()
MP3_B64 = base64.b64encode(MP3).decode()


def post(client, body, **kwargs):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post("/apiv1/separate", data=data, headers={"Content-type": "application/json"}, **kwargs)


def assert_error(response, status: int, code: str, words: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error", "message"}
    assert body["error"] == code
    assert words in body["message"]


@pytest.fixture
def nothing_left(redis_client, store, settings):
    """After the test: no job queued, no MP3 stored."""
    yield
    assert queued(settings) == 0
    assert list(store.client.list_objects(settings.queue_bucket)) == []
    assert list(store.client.list_objects(settings.output_bucket, recursive=True)) == []


BAD_BODIES = [
    ("not json at all", "invalid_json", "not valid JSON"),
    ('["a", "list"]', "invalid_json", "JSON object"),
    ("null", "invalid_json", "JSON object"),
    ({}, "missing_mp3", "'mp3' is missing"),
    ({"mp3": ""}, "missing_mp3", "'mp3' is empty"),
    ({"mp3": 42}, "invalid_mp3", "base64 string"),
    ({"mp3": "not*base64!"}, "invalid_base64", "not valid base64"),
    ({"mp3": "abc"}, "invalid_base64", "not valid base64"),  # bad padding: strict decoding refuses it
    ({"mp3": MP3_B64[:100] + "\n" + MP3_B64[100:]}, "invalid_base64", "not valid base64"),
    ({"mp3": base64.b64encode(b"hello, I am a text file").decode()}, "invalid_mp3", "not an MP3"),
    ({"mp3": base64.b64encode(os.urandom(20000)).decode()}, "invalid_mp3", "not an MP3"),
    # A frame and a half: it looks like an MP3, and decodes to 0.05 s.
    ({"mp3": base64.b64encode(MP3[:600]).decode()}, "invalid_mp3", "does not decode"),
    ({"mp3": MP3_B64, "model": "no_such_model"}, "invalid_model", "GET /apiv1/models"),  # where the choices are listed
    ({"mp3": MP3_B64, "model": ["htdemucs"]}, "invalid_model", "model"),
    ({"mp3": MP3_B64, "callback": "http://example.com"}, "invalid_callback", "must be an object"),
    ({"mp3": MP3_B64, "callback": {"data": {}}}, "invalid_callback", "not an http(s) URL"),
    ({"mp3": MP3_B64, "callback": {"url": "ftp://example.com/x"}}, "invalid_callback", "not an http(s) URL"),
    ({"mp3": MP3_B64, "callback": {"url": "not a url"}}, "invalid_callback", "not an http(s) URL"),
    ({"mp3": MP3_B64, "callback": {"url": "http://"}}, "invalid_callback", "not an http(s) URL"),
    ({"mp3": MP3_B64, "callback": {"url": "http://example.com:99999/"}}, "invalid_callback", "malformed port"),
]


@pytest.mark.parametrize(("body", "code", "words"), BAD_BODIES, ids=[case[1] for case in BAD_BODIES])
def test_bad_separate_request_is_refused_and_leaves_nothing(client, nothing_left, body, code, words):
    assert_error(post(client, body), 400, code, words)


def test_oversized_body_is_413_and_leaves_nothing(settings, nothing_left):
    client = create_app(replace(settings, max_request_bytes=50_000)).test_client()
    assert_error(post(client, {"mp3": MP3_B64}), 413, "too_large", "50000 bytes")


def test_redis_down_is_503_and_no_mp3_is_left_behind(settings, store):
    client = create_app(replace(settings, redis_port=free_port())).test_client()
    response = post(client, {"mp3": MP3_B64})
    assert_error(response, 503, "backend_unavailable", "(Redis) is unreachable")
    assert response.headers["Retry-After"]
    assert list(store.client.list_objects(settings.queue_bucket)) == []


def test_store_down_is_503_and_no_job_is_queued(settings, redis_client):
    client = create_app(replace(settings, s3_endpoint=f"127.0.0.1:{free_port()}")).test_client()
    response = post(client, {"mp3": MP3_B64})
    assert_error(response, 503, "backend_unavailable", "object store unreachable")
    assert queued(settings) == 0


def test_resubmitting_a_stored_song_while_redis_is_down_keeps_the_earlier_upload(client, settings, store):
    assert post(client, {"mp3": MP3_B64}).status_code == 200
    down = create_app(replace(settings, redis_port=free_port())).test_client()
    assert post(down, {"mp3": MP3_B64}).status_code == 503
    # The first job is still queued and still needs its MP3.
    assert [item.object_name for item in store.client.list_objects(settings.queue_bucket)] != []


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/apiv1/track/not-a-hash/vocals.mp3", 400, "invalid_songhash"),
        ("/apiv1/track/" + "a" * 55 + "/vocals.mp3", 400, "invalid_songhash"),
        ("/apiv1/track/" + "a" * 56 + "/tuba.mp3", 400, "invalid_track"),
        ("/apiv1/track/" + "a" * 56 + "/vocals.mp3", 404, "track_not_found"),
        ("/apiv1/track/" + "a" * 56 + "/base.mp3", 404, "track_not_found"),
        ("/apiv1/remove/" + "a" * 56 + "/vocals.mp3", 404, "track_not_found"),
        ("/apiv1/remove/" + "z" * 56 + "/vocals.mp3", 400, "invalid_songhash"),
        ("/apiv1/remove/" + "a" * 56 + "/voice", 400, "invalid_track"),
        ("/apiv1/nowhere", 404, "not_found"),
    ],
)
def test_bad_track_paths(client, path, status, code):
    response = client.get(path)
    assert response.status_code == status
    assert response.get_json()["error"] == code
    assert response.get_json()["message"]


def test_delete_of_a_missing_track_is_404(client):
    response = client.delete("/apiv1/remove/" + "b" * 56 + "/drums")
    assert_error(response, 404, "track_not_found", "no track drums")


def test_wrong_method_is_a_json_405(client):
    response = client.get("/apiv1/separate")
    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"


def test_queue_accepts_the_reference_clients_null_json_body(client, redis_client, settings):
    for path in ("/apiv1/queue", "/apiv1/queue/"):
        response = client.get(path, data="null", headers={"Content-type": "application/json"})
        assert response.status_code == 200
        assert response.get_json() == {"queue": [], "songs": [], "next": None}


@pytest.mark.parametrize("cursor", ["nan:x", "inf:x", "-inf:x", "1e999:x", "abc", "1.5", ":", "1.5:"])
def test_a_listing_cursor_it_never_gave_is_a_400(client, cursor):
    for path in ("/apiv1/queue", "/apiv1/admin/dead"):
        answer = client.get(path, query_string={"cursor": cursor})
        assert answer.status_code == 400 and answer.get_json()["error"] == "invalid_cursor", (path, answer.get_json())
