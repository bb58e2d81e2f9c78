"""One job contract: a job carries the options and result it was accepted for, so REST and workers that disagree
about defaults (a rolling update of DEMUCS_MODEL) neither lose a song nor mislabel it; and a cancel is real."""

from __future__ import annotations

import base64
import time
from dataclasses import replace

import pytest
import requests

from msaas.jobqueue import JobQueue
from msaas.models import FOUR_STEMS
from msaas.naming import songhash_of
from rest import create_app
from support import ROOT, SHORT_SAMPLE, processes, serve, start_service, wait_for

pytestmark = pytest.mark.demucs

HUM = SHORT_SAMPLE.read_bytes()
MARCH = (ROOT / "data" / "short-march.mp3").read_bytes()


def submit(rest: str, mp3: bytes, **fields) -> dict:
    answer = requests.post(f"http://{rest}/apiv1/separate", json={"mp3": base64.b64encode(mp3).decode(), **fields})
    assert answer.status_code == 200, answer.text
    return answer.json()


def status(rest: str, songhash: str, **query) -> dict:
    return requests.get(f"http://{rest}/apiv1/status/{songhash}", params=query).json()


def outputs(store, settings, songhash: str) -> list[str]:
    """The song's outputs, each named by its result's prefix and track (the attempt's own folder and the tracks'
    waveforms left out)."""
    names = [item.object_name.split("/") for item in store.client.list_objects(settings.output_bucket, songhash,
                                                                                  recursive=True)
             if not item.object_name.endswith(".waveform.json")]
    return sorted(f"{songhash}/{name[1]}/{name[3]}" for name in names)


def test_a_rest_worker_default_model_skew_neither_loses_a_song_nor_mislabels_it(settings, store, tmp_path):
    # REST's default is the tiny model and the worker's is htdemucs (whose weights it could not even fetch here):
    # a song submitted without a model runs with the model REST accepted it for.
    rest_tiny, server_tiny = serve(create_app(settings))
    rest_ht, server_ht = serve(create_app(replace(settings, demucs_model="htdemucs")))
    worker = start_service("worker", settings, tmp_path / "worker.log", DEMUCS_MODEL="htdemucs")
    try:
        hum = submit(rest_tiny, HUM)["hash"]
        done = wait_for(lambda: (s := status(rest_tiny, hum))["state"] in ("done", "failed") and s, 120, "hum")
        assert done["state"] == "done", done
        assert done["options"]["model"] == "demucs_unittest"
        assert outputs(store, settings, hum) == sorted(f"{hum}/default/{track}.mp3" for track in FOUR_STEMS)
        assert requests.get(done["tracks"]["vocals"]).ok

        # The other way round: REST's default is htdemucs, the worker's the tiny model, and the client names the
        # tiny model. REST files it as a tagged result; the worker writes it there, not under the plain names.
        worker.stop()
        worker = start_service("worker", settings, tmp_path / "worker2.log")
        march = submit(rest_ht, MARCH, model="demucs_unittest")["hash"]
        query = {"model": "demucs_unittest"}
        done = wait_for(lambda: (s := status(rest_ht, march, **query))["state"] in ("done", "failed") and s, 120,
                        "march")
        assert done["state"] == "done", done
        assert done["options"]["model"] == "demucs_unittest"
        assert outputs(store, settings, march) == sorted(
            f"{march}/demucs_unittest-all-mp3320/{track}.mp3" for track in FOUR_STEMS)
        assert requests.get(done["tracks"]["drums"]).ok
        assert requests.get(f"http://{rest_ht}/apiv1/status/{march}").status_code == 404  # no plain result
    finally:
        worker.stop()
        server_tiny.shutdown()
        server_ht.shutdown()


def demucs_runs(worker) -> list[int]:
    """The worker's Demucs processes (other tests on this machine may run their own)."""
    table = processes()

    def descends(pid: int) -> bool:
        while pid > 1:
            if pid == worker.process.pid:
                return True
            pid = table.get(pid, (0, ""))[0]
        return False

    return [pid for pid, (_, command) in table.items() if "demucs.separate" in command and descends(pid)]


def test_cancelling_a_running_song_stops_demucs_and_keeps_nothing(settings, rest, store, redis_client, tmp_path):
    # 10 random shifts make the tiny model's separation of 8 s last long enough to cancel it mid-way.
    worker = start_service("worker", settings, tmp_path / "worker.log")
    try:
        hum = submit(rest, HUM, shifts=10)["hash"]
        wait_for(lambda: status(rest, hum, shifts=10)["state"] == "processing" and demucs_runs(worker), 60,
                 "a separation")
        answer = requests.delete(f"http://{rest}/apiv1/remove/{hum}")
        assert answer.status_code == 200 and answer.json()["cancelled"] == 1
        cancelled_at = time.monotonic()
        wait_for(lambda: not demucs_runs(worker), 10, "Demucs killed")
        assert time.monotonic() - cancelled_at < 10
        assert status(rest, hum, shifts=10)["state"] == "cancelled"
        # The worker goes on with the next song (slow too: 10 shifts), and nothing of the cancelled one is written.
        march = submit(rest, MARCH, shifts=10)["hash"]
        wait_for(lambda: status(rest, march, shifts=10)["state"] == "processing", 60,
                 "the worker to take the next song")
        assert outputs(store, settings, hum) == []
        assert status(rest, hum, shifts=10)["state"] == "cancelled"
        assert JobQueue(redis_client, settings.worker_queue, settings.demucs_model).depths()["dead"] == 0
    finally:
        worker.stop()


def test_cancelling_a_queued_song_takes_it_off_the_queue(settings, rest, redis_client, tmp_path):
    hum = submit(rest, HUM)["hash"]
    assert requests.get(f"http://{rest}/apiv1/queue").json()["queue"] == [hum]
    answer = requests.post(f"http://{rest}/apiv1/cancel/{hum}")
    assert answer.status_code == 200 and answer.json()["cancelled"] == 1
    assert requests.get(f"http://{rest}/apiv1/queue").json()["queue"] == []
    assert status(rest, hum)["state"] == "cancelled"
    # Submitted again, it is queued again, as a new job.
    assert submit(rest, HUM)["reason"] == "Song enqueued for separation"
    worker = start_service("worker", settings, tmp_path / "worker.log")
    try:
        wait_for(lambda: status(rest, hum)["state"] == "done", 120, "the resubmitted song")
    finally:
        worker.stop()
    assert JobQueue(redis_client, settings.worker_queue, settings.demucs_model).depths()["dead"] == 0
    assert songhash_of(HUM) == hum
