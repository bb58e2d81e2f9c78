"""The RoFormer engine through the whole stack (issue 25): songs with the small random-weight RoFormers of
devstack/random_models.py and a two-model pair, on both APIs, through real workers; cancel and the time limit kill
the runner; the door refuses what the workers serving a model cannot finish; a RoFormer job waits for a worker
that serves RoFormers while a Demucs-only worker takes Demucs jobs."""

from __future__ import annotations

import functools
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import requests

from data import generate
from devstack import random_models
from msaas.connections import connect_redis
from msaas.engines import Capability, refuse_if_too_long
from msaas.errors import BadRequest
from msaas.jobqueue import JobQueue
from msaas.options import Options
from rpc_support import requests as submit_messages
from rpc_support import stub
from support import SHORT_SAMPLE, processes, start_service, wait_for
from worker import engines, wav
from worker.demucs_run import DemucsRun

HUM = SHORT_SAMPLE.read_bytes()  # 8 s: for the runs that are killed or refused, never finished
PAIR = "mel_band_roformer_unittest+demucs_unittest"
CLIP_SECONDS = 2.0  # the songs that are separated: a RoFormer run's cost is mostly its start, whatever the length


@functools.cache
def clip(index: int) -> bytes:
    """The first bars of one of the bundled songs (data/generate.py), as an MP3 of CLIP_SECONDS."""
    song = replace(generate.SONGS[index], seconds=CLIP_SECONDS)
    return generate.encode_mp3(sum(generate.render(song).values()), 192)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return random_models.write_roformer(tmp_path_factory.mktemp("roformers"))


@pytest.fixture
def engine_settings(settings, model_dir):
    return replace(settings, model_dir=model_dir)


def submit(rest: str, mp3: bytes, **fields) -> requests.Response:
    return requests.post(f"http://{rest}/apiv1/separate", params=fields, files={"mp3": ("song.mp3", mp3)}, timeout=60)


def status(rest: str, songhash: str, **query) -> dict:
    return requests.get(f"http://{rest}/apiv1/status/{songhash}", params=query, timeout=10).json()


def runners(worker) -> list[int]:
    """The worker's RoFormer runs (children of its process, at any depth)."""
    table = processes()

    def descends(pid: int) -> bool:
        while pid:
            if pid == worker.process.pid:
                return True
            pid = table.get(pid, (0, ""))[0]
        return False

    return [pid for pid, (_, command) in table.items() if "worker.roformer_run" in command and descends(pid)]


def test_the_catalogue_lists_each_engine_with_stems_and_published_sdr(client, rpc):
    models = {model["name"]: model for model in client.get("/apiv1/models").get_json()["models"]}
    bs, mel = models["bs_roformer_viperx_1297"], models["mel_band_roformer_viperx_1143"]
    assert bs["engine"] == mel["engine"] == "roformer" and bs["stems"] == ["vocals", "no_vocals"]
    assert bs["published"][0]["sdr"]["vocals"] == 10.87 and mel["published"][0]["sdr"]["vocals"] == 9.67
    pair = models["bs_roformer_viperx_1297+htdemucs"]
    assert pair["engine"] == "roformer+demucs" and pair["stems"] == ["vocals", "drums", "bass", "other"]
    assert pair["published"][0]["sdr"] == {"vocals": 10.87, "drums": 10.88, "bass": 11.76, "other": 5.74}
    from msaas.v1 import separation_pb2 as pb

    listed = {model.name: model for model in stub(rpc).ListModels(pb.ListModelsRequest()).models}
    assert listed["bs_roformer_viperx_1297"].engine == "roformer"
    assert dict(listed["bs_roformer_viperx_1297"].published[0].sdr) == {"vocals": 10.87}


def test_options_that_do_not_apply_to_an_engine_are_refused_with_a_sentence(client):
    def refused(**query) -> dict:
        answer = client.post("/apiv1/separate", query_string=query, data={"mp3": (SHORT_SAMPLE.open("rb"), "a.mp3")})
        assert answer.status_code == 400
        return answer.get_json()

    assert refused(model="bs_roformer_viperx_1297", shifts=2) == {
        "error": "invalid_option",
        "message": "shifts applies to Demucs models only; bs_roformer_viperx_1297 is a roformer model"}
    assert "two_stems does not apply to the two-model" in refused(model=PAIR, two_stems="vocals")["message"]
    assert "not a source of model" in refused(model="mel_band_roformer_unittest", two_stems="drums")["message"]
    # A query string's "+" is a space: the pair is found either way, and its tag spells it without either.
    assert Options.resolve({"model": PAIR.replace("+", " ")}, "htdemucs").tag == \
        "mel_band_roformer_unittest_plus_demucs_unittest-all-mp3320"


def test_each_roformer_and_the_pair_go_end_to_end_on_both_apis_and_cancel_kills_a_run(engine_settings, rest, rpc,
                                                                                        tmp_path):
    from msaas.v1 import separation_pb2 as pb

    worker = start_service("worker", engine_settings, tmp_path / "worker.log")
    try:
        hum = submit(rest, clip(0), model="mel_band_roformer_unittest", format="wav").json()["hash"]
        answer = stub(rpc).Submit(submit_messages(clip(1), options=pb.Options(model="bs_roformer_unittest")))
        march = answer.songhash
        pair = submit(rest, clip(1), model=PAIR, format="wav", sample_format="float32", residual=1).json()["hash"]

        def done(songhash: str, **query) -> bool:
            state = status(rest, songhash, **query)
            assert state["state"] != "failed", state
            return state["state"] == "done"

        wait_for(lambda: done(hum, model="mel_band_roformer_unittest", format="wav"), 120, "the Mel-Band RoFormer")
        wait_for(lambda: stub(rpc).GetStatus(pb.StatusRequest(songhash=march, options=pb.Options(
            model="bs_roformer_unittest"))).state == pb.SongStatus.STATE_DONE, 120, "the BS-RoFormer")
        pair_query = {"model": PAIR, "format": "wav", "sample_format": "float32", "residual": 1}
        wait_for(lambda: done(pair, **pair_query), 180, "the two-model job")
        assert sorted(status(rest, hum, model="mel_band_roformer_unittest", format="wav")["tracks"]) == \
            ["no_vocals", "vocals"]
        got = stub(rpc).GetStatus(pb.StatusRequest(songhash=march, options=pb.Options(model="bs_roformer_unittest")))
        assert sorted(got.tracks) == ["no_vocals", "vocals"]
        vocals = list(stub(rpc).DownloadTrack(pb.TrackRequest(songhash=march, track="vocals",
                                                              options=pb.Options(model="bs_roformer_unittest"))))
        assert vocals[0].info.size > 1000
        # The pair: four stems and the residual, which sum to the song.
        state = status(rest, pair, **pair_query)
        assert sorted(state["tracks"]) == ["bass", "drums", "other", "residual", "vocals"]
        tracks = {}
        for track in state["tracks"]:
            served = requests.get(f"http://{rest}/apiv1/track/{pair}/{track}.wav", params=pair_query, timeout=30)
            assert served.status_code == 200
            path = tmp_path / f"{track}.wav"
            path.write_bytes(served.content)
            tracks[track] = np.array(wav.read(path))
        assert np.abs(tracks["vocals"]).max() > 0 and np.abs(tracks["drums"]).max() > 0
        assert "separating with mel_band_roformer_unittest+demucs_unittest" in worker.log_path.read_text()
        cancel_kills_a_running_roformer(worker, rest)
    finally:
        worker.stop()


def test_a_pairs_stems_sum_to_what_demucs_stems_sum_to(tmp_path):
    """`combine`: the RoFormer's vocals, Demucs' drums and bass, and other taking what the two disagree on."""
    options = Options.resolve({"model": PAIR}, "htdemucs")
    song = DemucsRun(PAIR, tmp_path / "song.mp3", tmp_path / "separated", options)
    vocals, rest = replace(song, model="mel_band_roformer_unittest"), replace(song, model="demucs_unittest")
    source = tmp_path / "chunk-000.wav"
    rng = np.random.default_rng(1)
    written = {}
    for run, tracks in ((vocals, ("vocals", "no_vocals")), (rest, ("vocals", "drums", "bass", "other"))):
        for track in tracks:
            audio = rng.standard_normal((100_000, 2)).astype("<f4")
            path = run.track_path(track, source)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as file:
                wav.write_header(file, len(audio), float_samples=True)
                file.write(audio.tobytes())
            written[run.model, track] = audio
    engines.combine(vocals, rest, song, source)
    combined = {track: np.array(wav.read(song.track_path(track, source))) for track in ("vocals", "drums", "bass",
                                                                                         "other")}
    assert np.array_equal(combined["vocals"], written["mel_band_roformer_unittest", "vocals"])
    assert np.array_equal(combined["drums"], written["demucs_unittest", "drums"])
    demucs_sum = sum(written["demucs_unittest", track] for track in ("vocals", "drums", "bass", "other"))
    assert np.allclose(sum(combined.values()), demucs_sum, atol=1e-5)


def cancel_kills_a_running_roformer(worker, rest: str) -> None:
    """Cancelling a song while its RoFormer runs kills the run (the worker of the end-to-end case, which is idle)."""
    assert not runners(worker)
    # Overlap 0.9 makes the small model go ten times over each window of the 8 s song: long enough to cancel mid-way.
    query = {"model": "mel_band_roformer_unittest", "overlap": 0.9}
    hum = submit(rest, HUM, **query).json()["hash"]
    wait_for(lambda: status(rest, hum, **query)["state"] == "processing" and runners(worker), 60, "a RoFormer run")
    answer = requests.delete(f"http://{rest}/apiv1/remove/{hum}", timeout=10)
    assert answer.status_code == 200 and answer.json()["cancelled"] == 1
    wait_for(lambda: not runners(worker), 10, "the RoFormer run killed")
    assert status(rest, hum, **query)["state"] == "cancelled"


def test_the_time_limit_kills_a_roformer_and_says_so(engine_settings, rest, tmp_path):
    settings = replace(engine_settings, demucs_timeout_min=0.5, demucs_timeout_factor=0.0, max_attempts=1)
    worker = start_service("worker", settings, tmp_path / "worker.log")
    query = {"model": "bs_roformer_unittest"}
    try:
        hum = submit(rest, clip(0), **query).json()["hash"]
        wait_for(lambda: status(rest, hum, **query)["state"] == "failed", 60, "the time limit")
        assert status(rest, hum, **query)["reason"] == "the RoFormer separation timed out after 0 s and was killed"
        assert not runners(worker)
    finally:
        worker.stop()


def test_the_door_refuses_only_when_every_serving_worker_would_fail():
    cpu = Capability(("roformer",), "cpu", 1, {"bs_roformer_viperx_1297": 3.0})
    gpu = Capability(("roformer",), "cuda", 8, {})
    with pytest.raises(BadRequest):
        refuse_if_too_long("bs_roformer_viperx_1297", 8.0, [cpu])
    refuse_if_too_long("bs_roformer_viperx_1297", 8.0, [cpu, gpu])  # the GPU cannot tell: the song waits for it
    refuse_if_too_long("bs_roformer_viperx_1297", 2.0, [cpu])
    refuse_if_too_long("htdemucs", 8000.0, [cpu])  # no worker serving Demucs says anything


def test_pools_a_roformer_job_waits_for_a_roformer_worker_and_the_door_refuses_what_it_cannot_finish(
        engine_settings, rest, rpc, tmp_path):
    from msaas.v1 import separation_pb2 as pb

    demucs_only = start_service("worker", replace(engine_settings, worker_engines="demucs", hostname="demucs"),
                                tmp_path / "demucs.log")
    try:
        roformer_query = {"model": "mel_band_roformer_unittest"}
        roformer = submit(rest, clip(0), **roformer_query).json()["hash"]
        demucs = submit(rest, clip(1)).json()["hash"]
        wait_for(lambda: status(rest, demucs)["state"] == "done", 120, "the Demucs job")
        waiting = status(rest, roformer, **roformer_query)
        assert waiting["state"] == "queued" and waiting["position"] == 1
        time.sleep(2)  # a few more takes: the Demucs worker still leaves it
        assert status(rest, roformer, **roformer_query)["state"] == "queued"
        # A RoFormer worker with one CPU and at most 60 s a separation: the published BS-RoFormer takes about 17.8 s
        # a second of audio there, so it finishes at most 3 s of song.
        settings = replace(engine_settings, worker_engines="roformer", hostname="roformer", demucs_threads=1,
                           demucs_timeout_max=60.0)
        roformer_worker = start_service("worker", settings, tmp_path / "roformer.log")
        try:
            wait_for(lambda: status(rest, roformer, **roformer_query)["state"] == "done", 120, "the RoFormer job")
            assert "separating with mel_band_roformer_unittest" in roformer_worker.log_path.read_text()
            assert "separating with mel_band_roformer_unittest" not in demucs_only.log_path.read_text()
            # The door: the 8 s hum is refused before anything is queued, on both APIs.
            queue = JobQueue(connect_redis(settings), settings.worker_queue, settings.demucs_model)
            answer = submit(rest, HUM, model="bs_roformer_viperx_1297")
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"] == "too_long_for_model"
            assert answer.json()["message"].startswith(
                "a 8 s song would not finish within the time limit with model bs_roformer_viperx_1297 on the "
                "workers that serve it: they finish at most 3 s of audio with it")
            with pytest.raises(Exception) as refused:
                stub(rpc).Submit(submit_messages(HUM, options=pb.Options(model="bs_roformer_viperx_1297")))
            assert "would not finish within the time limit" in refused.value.details()
            assert queue.depths()["waiting"] == 0
            # Demucs songs are not this pool's to judge: the RoFormer worker's bounds refuse none of them.
            accepted = submit(rest, HUM)
            assert accepted.status_code == 200
            requests.delete(f"http://{rest}/apiv1/remove/{accepted.json()['hash']}", timeout=10)  # not to wait on it
        finally:
            roformer_worker.stop()
    finally:
        demucs_only.stop()
