"""The whole pipeline over real sockets: REST over HTTP, a worker process running the real Demucs CLI
(`-n demucs_unittest`), Redis, the S3 server, the logs service and a callback receiver."""

from __future__ import annotations

import base64
import subprocess
import sys
from dataclasses import replace

import jsonpickle
import pytest
import requests
import sphn

from msaas.jobqueue import JobQueue
from msaas.models import FOUR_STEMS
from msaas.naming import songhash_of
from rest import create_app
from support import ROOT, SHORT_SAMPLE, serve, start_service, wait_for

pytestmark = pytest.mark.demucs

SONG = SHORT_SAMPLE.read_bytes()
SONGHASH = songhash_of(SONG)


def submit(rest: str, mp3: bytes, **fields) -> requests.Response:
    body = jsonpickle.encode({"mp3": base64.b64encode(mp3).decode(), **fields})
    return requests.post(f"http://{rest}/apiv1/separate", data=body, headers={"Content-type": "application/json"})


def track_url(rest: str, songhash: str, track: str) -> str:
    return f"http://{rest}/apiv1/track/{songhash}/{track}.mp3"


def test_song_is_separated_downloaded_called_back_and_removed(
    settings, rest, worker, callback_receiver, redis_client, store, tmp_path
):
    logs = start_service("logs", settings, tmp_path / "logs.out")
    try:
        answer = submit(rest, SONG, callback={"url": callback_receiver.url, "data": {"mp3": "short-hum", "n": 1}})
        assert answer.status_code == 200
        assert (answer.json()["hash"], answer.json()["reason"]) == (SONGHASH, "Song enqueued for separation")
        assert store.has_input(SONGHASH)

        for track in FOUR_STEMS:
            response = wait_for(
                lambda track=track: (r := requests.get(track_url(rest, SONGHASH, track))).ok and r,
                120, f"track {track}",
            )
            assert response.headers["Content-Type"] == "audio/mpeg"
            path = tmp_path / f"{track}.mp3"
            path.write_bytes(response.content)
            audio, rate = sphn.read(str(path))
            assert rate == 44100 and audio.shape[0] == 2
            assert abs(audio.shape[1] / rate - 8.0) < 0.2  # the whole song, not a fragment
            assert abs(audio).max() > 0.001  # not silence

        # Written under the names of the attempt that published them (issue 20: a stale attempt's are never served).
        published = redis_client.hget(f"status:{SONGHASH}", "published")
        names = sorted(item.object_name for item in store.client.list_objects(settings.output_bucket, recursive=True))
        assert names == sorted(f"{SONGHASH}/default/{published}/{track}.{kind}" for track in FOUR_STEMS
                               for kind in ("mp3", "waveform.json"))  # each track, and its waveform for the page

        assert callback_receiver.arrived.wait(10)
        delivery = callback_receiver.received[0]
        assert delivery["path"] == "/hook"
        assert delivery["body"] == {"mp3": "short-hum", "n": 1}
        assert delivery["headers"]["X-Songhash"] == SONGHASH

        # The job is acknowledged: nothing waits, no worker holds anything.
        assert requests.get(f"http://{rest}/apiv1/queue").json() == {"queue": [], "songs": [], "next": None}
        assert JobQueue(redis_client, settings.worker_queue, settings.demucs_model).depths() == {
            "waiting": 0, "delayed": 0, "taken": 0, "dead": 0}

        removed = requests.delete(f"http://{rest}/apiv1/remove/{SONGHASH}/vocals.mp3")
        assert removed.status_code == 200
        assert removed.json()["track"] == "vocals"
        assert requests.get(track_url(rest, SONGHASH, "vocals")).status_code == 404
        assert requests.get(f"http://{rest}/apiv1/remove/{SONGHASH}/base.mp3").status_code == 200  # alias, GET
        assert requests.get(track_url(rest, SONGHASH, "bass")).status_code == 404
        assert requests.get(track_url(rest, SONGHASH, "drums")).status_code == 200
        status = requests.get(f"http://{rest}/apiv1/status/{SONGHASH}").json()
        assert status["state"] == "done" and set(status["tracks"]) == {"drums", "other"}

        # The logs service printed the other services' lines, naming host, service and song.
        printed = wait_for(
            lambda: "separated in" in (text := (tmp_path / "logs.out").read_text()) and text, 10, "log lines"
        )
        assert f"test rest INFO msaas.songs: song {SONGHASH} enqueued" in printed
        assert f"job {SONGHASH} separated in" in printed
    finally:
        logs.stop()


def test_queue_lists_waiting_songs_in_order(settings, rest):
    other = (ROOT / "data" / "short-march.mp3").read_bytes()
    for mp3 in (SONG, other):
        assert submit(rest, mp3).status_code == 200
    listing = requests.get(f"http://{rest}/apiv1/queue").json()
    assert listing["queue"] == [SONGHASH, songhash_of(other)]
    places = [(song["songhash"], song["position"]) for song in listing["songs"]]
    assert places == [(SONGHASH, 1), (songhash_of(other), 2)]


def test_job_pushed_by_send_request_script_is_processed(settings, rest, worker, store):
    store.put_input(SONGHASH, str(SHORT_SAMPLE))  # "already uploaded"
    env = {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(settings.redis_port), "PATH": "/usr/bin:/bin"}
    pushed = subprocess.run(
        [sys.executable, str(ROOT / "worker" / "send-request.py"), SONGHASH, "demucs_unittest"],
        env=env, capture_output=True, text=True, check=True,
    )
    assert '"hash"' in pushed.stdout or "'hash'" in pushed.stdout
    wait_for(lambda: requests.get(track_url(rest, SONGHASH, "other")).ok, 120, "the other track")


def test_worker_heartbeat_touches_its_liveness_file(settings, tmp_path):
    worker = start_service("worker", settings, tmp_path / "worker.log", TMPDIR=str(tmp_path))
    try:
        alive = tmp_path / "msaas-worker-alive"
        wait_for(alive.exists, 30, "the liveness file")
        first = alive.stat().st_mtime
        wait_for(lambda: alive.stat().st_mtime > first, 30, "a second heartbeat")  # LEASE_SECONDS / 3
    finally:
        worker.stop()


def test_unreadable_job_is_set_aside_and_the_queue_keeps_flowing(settings, rest, worker, redis_client):
    redis_client.lpush(settings.worker_queue, "this is not a job")
    assert submit(rest, SONG).status_code == 200
    wait_for(lambda: requests.get(track_url(rest, SONGHASH, "vocals")).ok, 120, "the good job")
    [dead] = JobQueue(redis_client, settings.worker_queue, settings.demucs_model).dead_letters()
    assert dead.job == "this is not a job" and "not JSON" in dead.reason


def test_default_model_without_network_fails_saying_the_weights_could_not_be_fetched(
    settings, tmp_path, redis_client
):
    """Offline, htdemucs' weights cannot be downloaded: the job fails and says why."""
    rest, server = serve(create_app(replace(settings, demucs_model="htdemucs")))  # the default model, as deployed
    offline_worker = start_service(
        "worker", settings, tmp_path / "worker.log", DEMUCS_MODEL="htdemucs", MAX_ATTEMPTS="1"
    )
    try:
        assert submit(rest, SONG).status_code == 200
        status = wait_for(
            lambda: (s := redis_client.hgetall(f"status:{SONGHASH}")).get("state") == "failed" and s,
            180, "the job to fail",
        )
        missing = requests.get(track_url(rest, SONGHASH, "vocals"))
    finally:
        offline_worker.stop()
        server.shutdown()
    assert "could not download the weights of model htdemucs" in status["reason"]
    assert missing.status_code == 404
    assert "separation failed: could not download the weights" in missing.json()["message"]
    assert f"job {SONGHASH} failed after 1 attempts: could not download" in (tmp_path / "worker.log").read_text()
