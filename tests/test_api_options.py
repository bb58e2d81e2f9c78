"""Status, dedup, options, raw uploads, limits, auth, deletion and retention, against real servers."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest
import requests

from msaas.connections import connect_redis
from msaas.naming import songhash_of
from msaas.options import Options
from rest import create_app
from support import ROOT, SHORT_SAMPLE, queued, serve, start_service, stored_result, wait_for

SONG = SHORT_SAMPLE.read_bytes()
SONGHASH = songhash_of(SONG)
B64 = base64.b64encode(SONG).decode()


def status_of(rest: str, songhash: str = SONGHASH, **query) -> requests.Response:
    return requests.get(f"http://{rest}/apiv1/status/{songhash}", params=query)


@pytest.mark.demucs
def test_status_follows_a_song_from_queued_to_done(settings, rest, store, redis_client, tmp_path):
    assert status_of(rest).status_code == 404
    assert requests.post(f"http://{rest}/apiv1/separate", json={"mp3": B64}).status_code == 200
    other = (ROOT / "data" / "short-march.mp3").read_bytes()
    requests.post(f"http://{rest}/apiv1/separate", json={"mp3": base64.b64encode(other).decode()})
    queued = status_of(rest).json()
    assert queued["state"] == "queued" and queued["position"] == 1 and queued["attempts"] == 0
    assert status_of(rest, songhash_of(other)).json()["position"] == 2
    assert set(queued["timestamps"]) == {"queued"}

    # With retention, "done" must expire before the store expires the tracks (the answer to a repeat trusts it).
    worker = start_service("worker", settings, tmp_path / "worker.log", RETENTION_DAYS="2")
    try:
        processing = wait_for(lambda: (b := status_of(rest).json())["state"] == "processing" and b, 60, "processing")
        assert processing["worker"].startswith("test-") and 0 <= processing["progress"] <= 100
        done = wait_for(lambda: (b := status_of(rest).json())["state"] == "done" and b, 120, "done")
    finally:
        worker.stop()
    assert 2 * 86400 - 3600 - 60 < redis_client.ttl(f"status:{SONGHASH}") <= 2 * 86400 - 3600
    for bucket in (settings.queue_bucket, settings.output_bucket):
        store.client.delete_bucket_lifecycle(bucket)
    assert set(done["timestamps"]) == {"queued", "processing", "done"}
    assert done["timestamps"]["queued"] <= done["timestamps"]["processing"] <= done["timestamps"]["done"]
    assert set(done["tracks"]) == {"vocals", "drums", "bass", "other"}
    vocals = requests.get(done["tracks"]["vocals"])
    assert vocals.status_code == 200 and vocals.headers["Content-Type"] == "audio/mpeg"

    # Dedup: the same song again is answered from the result, and nothing is queued.
    again = requests.post(f"http://{rest}/apiv1/separate", json={"mp3": B64})
    assert again.json() == {"hash": SONGHASH, "reason": again.json()["reason"],
                            "options": Options.resolve({}, settings.demucs_model).as_fields()}
    assert "already separated" in again.json()["reason"]
    assert SONGHASH not in requests.get(f"http://{rest}/apiv1/queue").json()["queue"]


def test_a_done_song_whose_tracks_are_gone_is_separated_again(rest, store, redis_client, settings):
    """A repeat is answered from the "done" status alone; a track found missing (here: the S3 server lost its
    objects, as when a store's data is wiped) drops that status, so the next submission separates the song again."""
    stored_result(redis_client, store, SONGHASH, {"drums": SHORT_SAMPLE})
    for item in store.client.list_objects(settings.output_bucket, recursive=True):
        store.client.remove_object(settings.output_bucket, item.object_name)
    store.client.remove_bucket(settings.output_bucket)
    repeat = requests.post(f"http://{rest}/apiv1/separate", json={"mp3": B64})
    assert "already separated" in repeat.json()["reason"]
    # A track the result never had (guitar is htdemucs_6s') says nothing about the result's own tracks.
    assert requests.get(f"http://{rest}/apiv1/track/{SONGHASH}/guitar.mp3").status_code == 404
    assert redis_client.hget(f"status:{SONGHASH}", "state") == "done"
    missing = requests.get(f"http://{rest}/apiv1/track/{SONGHASH}/drums.mp3")
    assert missing.status_code == 404 and "no longer stored" in missing.json()["message"]
    answer = requests.post(f"http://{rest}/apiv1/separate", json={"mp3": B64})
    assert answer.status_code == 200, answer.text
    assert answer.json()["reason"] == "Song enqueued for separation"
    assert queued(settings) == 1


def test_removing_a_track_makes_the_next_submission_separate_the_song_again(rest, store, redis_client, settings):
    stored_result(redis_client, store, SONGHASH, {"vocals": SHORT_SAMPLE, "drums": SHORT_SAMPLE})
    assert requests.delete(f"http://{rest}/apiv1/remove/{SONGHASH}/vocals.mp3").status_code == 200
    status = requests.get(f"http://{rest}/apiv1/status/{SONGHASH}").json()
    assert status["state"] == "done" and "vocals" not in status["tracks"]
    gone = requests.get(f"http://{rest}/apiv1/track/{SONGHASH}/vocals.mp3")
    assert gone.status_code == 404 and "was removed" in gone.json()["message"]
    assert requests.get(f"http://{rest}/apiv1/track/{SONGHASH}/drums.mp3").content == SONG
    answer = requests.post(f"http://{rest}/apiv1/separate", json={"mp3": B64})
    assert answer.json()["reason"] == "Song enqueued for separation"


def test_a_queued_song_is_not_queued_twice(rest, redis_client, settings):
    first = requests.post(f"http://{rest}/apiv1/separate", json={"mp3": B64}).json()
    second = requests.post(f"http://{rest}/apiv1/separate", data=SONG, headers={"Content-Type": "audio/mpeg"})
    assert first["reason"] == "Song enqueued for separation"
    assert second.json()["reason"] == "Song already queued with these options; not queued again"
    assert second.json()["hash"] == SONGHASH
    assert queued(settings) == 1


def test_raw_and_multipart_uploads_name_the_same_song(rest, redis_client, settings):
    raw = requests.post(
        f"http://{rest}/apiv1/separate", data=SONG, headers={"Content-Type": "audio/mpeg"},
        params={"format": "wav", "two_stems": "vocals"},
    )
    assert raw.status_code == 200 and raw.json()["hash"] == SONGHASH
    form = requests.post(
        f"http://{rest}/apiv1/separate", files={"mp3": ("song.mp3", SONG, "audio/mpeg")}, params={"format": "flac"}
    )
    assert form.status_code == 200 and form.json()["hash"] == SONGHASH
    assert form.json()["reason"] == "Song enqueued for separation"  # other options: another result
    assert queued(settings) == 2
    empty = requests.post(f"http://{rest}/apiv1/separate", data=b"", headers={"Content-Type": "audio/mpeg"})
    assert empty.status_code == 400 and empty.json()["error"] == "missing_mp3"
    nofile = requests.post(f"http://{rest}/apiv1/separate", files={"song": ("a.mp3", SONG)})
    assert nofile.status_code == 400 and "'mp3'" in nofile.json()["message"]


@pytest.mark.demucs
def test_options_give_their_own_tracks_beside_the_default_ones(settings, rest, store, tmp_path):
    requests.post(f"http://{rest}/apiv1/separate", json={"mp3": B64})
    karaoke = {"two_stems": "vocals", "format": "wav"}
    requests.post(f"http://{rest}/apiv1/separate", json={"mp3": B64, **karaoke})
    small = {"mp3_bitrate": 128}
    requests.post(f"http://{rest}/apiv1/separate", json={"mp3": B64, **small})
    lossless = {"format": "flac"}
    requests.post(f"http://{rest}/apiv1/separate", json={"mp3": B64, **lossless})
    smooth = {"overlap": 0.5}  # raw upload: options in the query string
    requests.post(f"http://{rest}/apiv1/separate", params=smooth, data=SONG, headers={"Content-Type": "audio/mpeg"})
    worker = start_service("worker", settings, tmp_path / "worker.log")
    try:
        for query in (karaoke, small, lossless, smooth, {}):
            wait_for(lambda q=query: status_of(rest, **q).json()["state"] == "done", 120, f"result {query}")
    finally:
        worker.stop()
    # Each result's tracks lie under its own prefix, written there by the attempt that published them.
    names = {item.object_name.rpartition("/")[0].rpartition("/")[0] + "/" + item.object_name.rpartition("/")[2]
             for item in store.client.list_objects(settings.output_bucket, recursive=True)}
    tag = "demucs_unittest-vocals-wav"
    assert {f"{SONGHASH}/{tag}/vocals.wav", f"{SONGHASH}/{tag}/no_vocals.wav"} <= names
    assert {f"{SONGHASH}/default/{track}.mp3" for track in ("vocals", "drums", "bass", "other")} <= names
    assert f"{SONGHASH}/demucs_unittest-all-flac/drums.flac" in names
    assert f"{SONGHASH}/demucs_unittest-all-mp3128/bass.mp3" in names
    assert f"{SONGHASH}/demucs_unittest-all-mp3320-overlap0.5/vocals.mp3" in names
    assert status_of(rest, **smooth).json()["options"]["overlap"] == 0.5

    wav = requests.get(f"http://{rest}/apiv1/track/{SONGHASH}/no_vocals.wav", params={"two_stems": "vocals"})
    assert wav.status_code == 200 and wav.headers["Content-Type"] == "audio/wav" and wav.content[:4] == b"RIFF"
    flac = requests.get(f"http://{rest}/apiv1/track/{SONGHASH}/drums.flac")
    assert flac.headers["Content-Type"] == "audio/flac" and flac.content[:4] == b"fLaC"
    small_bass = requests.get(f"http://{rest}/apiv1/track/{SONGHASH}/bass.mp3", params=small).content
    default_bass = requests.get(f"http://{rest}/apiv1/track/{SONGHASH}/bass.mp3").content
    assert len(small_bass) < len(default_bass) * 0.6  # 128 against 320 kbit/s
    done = status_of(rest, **karaoke).json()
    assert set(done["tracks"]) == {"vocals", "no_vocals"}
    assert done["options"] == Options.resolve(karaoke, "demucs_unittest").as_fields()
    assert (done["options"]["two_stems"], done["options"]["format"], done["options"]["mp3_bitrate"]) == (
        "vocals", "wav", None)
    mismatch = requests.get(f"http://{rest}/apiv1/track/{SONGHASH}/drums.flac", params={"format": "wav"})
    assert mismatch.status_code == 400


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"two_stems": "guitar"}, "not a source of model demucs_unittest"),
        ({"two_stems": "kazoo"}, "two_stems 'kazoo' must be one of"),
        ({"format": "ogg"}, "format 'ogg' must be one of mp3, wav, flac"),
        ({"mp3_bitrate": 100}, "must be one of 64, 96"),
        ({"format": "wav", "mp3_bitrate": 128}, "applies to format mp3 only"),
        ({"callback": {"url": "http://10.1.2.3/hook"}}, "private address"),
        ({"callback": {"url": "http://169.254.169.254/latest/meta-data"}}, "link-local"),
    ],
)
def test_bad_options_are_refused(client, redis_client, settings, fields, words):
    response = client.post("/apiv1/separate", json={"mp3": B64, **fields})
    assert response.status_code == 400, response.get_json()
    assert words in response.get_json()["message"]
    assert queued(settings) == 0


def test_song_longer_than_the_limit_is_refused_with_the_limit(settings):
    client = create_app(replace(settings, max_song_seconds=5)).test_client()
    response = client.post("/apiv1/separate", json={"mp3": B64})
    assert response.status_code == 400
    assert response.get_json() == {"error": "too_long", "message": "song is longer than the limit of 5 s"}


def test_rate_limit_answers_429_with_retry_after(settings):
    client = create_app(replace(settings, rate_limit_per_minute=3)).test_client()
    answers = [client.get("/apiv1/queue") for _ in range(4)]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    assert answers[-1].get_json()["error"] == "too_many_requests"
    assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60
    assert client.get("/healthz").status_code == 200  # probes are never limited


def test_api_keys_guard_every_route_but_the_open_ones(settings):
    secret = "sekrit-key-4242"
    client = create_app(replace(settings, api_keys=f"other-key, {secret}")).test_client()
    for path in ("/", "/healthz", "/readyz"):
        assert client.get(path).status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": secret}):
        answer = client.get("/apiv1/queue", headers=headers)
        assert answer.status_code == 401 and answer.get_json()["error"] == "unauthorized"
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    authorized = {"Authorization": f"Bearer {secret}"}
    assert client.get("/apiv1/queue", headers=authorized).status_code == 200
    assert client.post("/apiv1/separate", json={"mp3": B64}, headers=authorized).status_code == 200
    assert client.post("/apiv1/separate", json={"mp3": B64}).status_code == 401
    logged = connect_redis(settings).lrange(settings.log_list, 0, -1)
    assert logged and not [line for line in logged if secret in line]


@pytest.mark.demucs
def test_removing_a_song_removes_every_result_and_its_input(settings, rest, store, redis_client, tmp_path):
    requests.post(f"http://{rest}/apiv1/separate", json={"mp3": B64})
    requests.post(f"http://{rest}/apiv1/separate", json={"mp3": B64, "format": "wav"})
    worker = start_service("worker", settings, tmp_path / "worker.log")
    try:
        for query in ({}, {"format": "wav"}):
            wait_for(lambda q=query: status_of(rest, **q).json()["state"] == "done", 120, f"result {query}")
    finally:
        worker.stop()
    removed = requests.delete(f"http://{rest}/apiv1/remove/{SONGHASH}")
    assert removed.status_code == 200 and removed.json()["removed"] == 17  # 4 + 4 tracks, their waveforms, the input
    assert list(store.client.list_objects(settings.output_bucket, recursive=True)) == []
    assert not store.has_input(SONGHASH)
    assert status_of(rest).status_code == 404
    assert requests.delete(f"http://{rest}/apiv1/remove/{SONGHASH}").status_code == 404


def test_retention_sets_a_lifecycle_rule_on_both_buckets(settings, store):
    app = create_app(replace(settings, retention_days=7))
    assert app.test_client().get("/readyz").status_code == 200
    for bucket in (settings.queue_bucket, settings.output_bucket):
        [rule] = store.client.get_bucket_lifecycle(bucket).rules
        assert rule.expiration.days == 7
    store.client.delete_bucket_lifecycle(settings.queue_bucket)
    store.client.delete_bucket_lifecycle(settings.output_bucket)


def test_redirect_answers_a_presigned_link_that_downloads_the_track(settings, store, redis_client, tmp_path):
    track = tmp_path / "vocals.mp3"
    track.write_bytes(SONG)
    stored_result(redis_client, store, SONGHASH, {"vocals": track})
    address, server = serve(create_app(settings))
    try:
        answer = requests.get(f"http://{address}/apiv1/track/{SONGHASH}/vocals.mp3?redirect=1", allow_redirects=False)
        assert answer.status_code == 302
        assert "X-Amz-Signature" in answer.headers["Location"]
        assert requests.get(answer.headers["Location"]).content == SONG
        missing = requests.get(f"http://{address}/apiv1/track/{SONGHASH}/drums.mp3?redirect=1", allow_redirects=False)
        assert missing.status_code == 404
    finally:
        server.shutdown()


def test_track_links_follow_public_url_whatever_host_a_request_sends(settings, redis_client, store, tmp_path):
    """A request's Host header must not choose where clients are sent for their tracks (issue 12, item 10)."""
    stored_result(redis_client, store, SONGHASH, {"vocals": SHORT_SAMPLE})
    public = create_app(replace(settings, public_url="https://msaas.example.org/")).test_client()
    lied_to = public.get(f"/apiv1/status/{SONGHASH}", headers={"Host": "evil.example"}).get_json()
    assert lied_to["tracks"]["vocals"] == f"https://msaas.example.org/apiv1/track/{SONGHASH}/vocals.mp3"
    assert all(url.startswith("https://msaas.example.org/") for url in lied_to["tracks"].values())


def test_a_repeat_with_another_callback_is_told_its_callback_is_not_registered(client, callback_receiver):
    """A second submission of a queued song is not queued again, and says what became of its callback."""
    first = client.post("/apiv1/separate", json={"mp3": B64, "callback": {"url": callback_receiver.url}})
    assert first.get_json()["reason"] == "Song enqueued for separation"
    again = client.post("/apiv1/separate", json={"mp3": B64, "callback": {"url": callback_receiver.url + "2"}})
    assert again.get_json()["reason"] == (
        "Song already queued with these options; not queued again; this request's callback is not registered "
        "(the first submission's is)")
    plain = client.post("/apiv1/separate", json={"mp3": B64}).get_json()["reason"]
    assert plain == "Song already queued with these options; not queued again"
