"""Hear it sooner (issue 23): a range of a song, previews ahead of other songs, the parts of the tracks served as
they are ready, against real servers and workers. The tracks are compared with `tiny` (fixed random weights:
`demucs_unittest` draws new ones in every process) and Demucs' random shifts off."""

from __future__ import annotations

import base64
import io
import re
import time
import wave
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import sphn
from test_chunks import signal_to_difference, song

from devstack import random_models
from msaas import audio, engines
from msaas.audio import SAMPLE_RATE
from msaas.cli import parser
from msaas.cli.commands import options_of
from msaas.cli.progress import describe
from msaas.errors import BadRequest
from msaas.eta import Estimates, Speed, fit
from msaas.jobqueue import JobQueue
from msaas.jobs import Job
from msaas.models import FOUR_STEMS
from msaas.naming import songhash_of
from msaas.options import Options
from msaas.previews import Loudness
from msaas.settings import Settings
from msaas.status import SongStatus
from msaas.v1 import separation_pb2 as pb
from rest import create_app
from rpc_support import error_code, stub
from rpc_support import requests as rpc_requests
from support import job_for, processes, serve, start_service, wait_for
from worker import chunks
from worker.demucs_run import DemucsConfig, DemucsRun
from worker.roformer_run import RoformerConfig
from worker.separation import Hooks, SeparationConfig, separate

HTDEMUCS = chunks.segment_grid("htdemucs", None)


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory) -> Path:
    return random_models.write(tmp_path_factory.mktemp("models"))


def post(rest: str, mp3: bytes, **options) -> requests.Response:
    return requests.post(f"http://{rest}/apiv1/separate", json={"mp3": base64.b64encode(mp3).decode(), **options})


def status(rest: str, songhash: str, **options) -> dict:
    return requests.get(f"http://{rest}/apiv1/status/{songhash}", params=options).json()


def frames_of(wav_bytes: bytes) -> int:
    with wave.open(io.BytesIO(wav_bytes)) as reader:
        return reader.getnframes()


def samples_of(wav_bytes: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(wav_bytes)) as reader:
        return np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")


# --- What a range and a preview are -------------------------------------------------------------------------------

@pytest.mark.parametrize(("values", "says"), [
    ({"start": 5, "end": 5}, "must be after start"), ({"start": "10", "end": "3.5"}, "must be after start"),
    ({"start": -1}, "from 0 to"), ({"end": "nan"}, "from 0 to"), ({"start": float("inf")}, "from 0 to"),
    ({"end": -0.5}, "from 0 to"), ({"preview": True, "start": 0, "end": 30.5}, "at most 30 s"),
    ({"preview": "yes", "start": 5}, "together, or neither"),
])
def test_a_bad_range_is_refused_with_a_sentence(values, says):
    with pytest.raises(BadRequest, match=says) as refusal:
        Options.resolve(values, "htdemucs")
    assert refusal.value.code == "invalid_range"


@pytest.mark.parametrize("values", [{"start": 5}, {"end": 20}, {"preview": True}])
def test_a_two_model_entry_refuses_a_range_with_a_sentence(values):
    """Its two models' windows fall on different grids: no range of it would be the whole song's."""
    with pytest.raises(BadRequest, match="does not apply to the two-model .*a range with bs_roformer") as refusal:
        Options.resolve({"model": "bs_roformer_viperx_1297+htdemucs", **values}, "htdemucs")
    assert refusal.value.code == "invalid_range"
    assert Options.resolve({"model": "bs_roformer_viperx_1297", **values}, "htdemucs").is_range or values == {
        "preview": True}


def test_a_preview_waits_in_its_engines_preview_lane_and_a_worker_looks_in_those_it_serves(settings, redis_client):
    queue = JobQueue(redis_client, settings.worker_queue, settings.demucs_model)
    queue.push(replace(job_for("a" * 56, settings, model="bs_roformer_unittest", preview=True), lane="preview"))
    demucs_lanes, roformer_lanes = engines.served_lanes(("demucs",)), engines.served_lanes(("roformer",))
    assert not queue.previews_waiting(engines.preview_lanes(demucs_lanes))  # a Demucs worker does not stop for it
    assert queue.previews_waiting(engines.preview_lanes(roformer_lanes))
    assert queue.take("demucs-only", 30, engines.preview_lanes(demucs_lanes)) is None
    taken = queue.take("roformer", 30, engines.preview_lanes(roformer_lanes))
    assert taken is not None and taken.job.options.model == "bs_roformer_unittest"


def test_a_range_names_its_result_exactly_and_is_checked_against_the_song():
    options = Options.resolve({"start": "62.125", "end": 1234.5678}, "htdemucs")
    assert options.result("a" * 56, "htdemucs").tag == "htdemucs-all-mp3320-start62.125-end1234.5678"  # not :g's
    assert Options.resolve(options.as_query(), "htdemucs") == options  # links select it again
    assert options.within(1300.0).range_seconds(1300.0) == pytest.approx(1234.5678 - 62.125)
    assert Options.resolve({"start": 30}, "htdemucs").range_seconds(200.0) == 170.0  # no end: the song's
    for seconds in (1000.0, 62.125):  # ends past the song, or a start at its end
        with pytest.raises(BadRequest, match="past the song's end") as refusal:
            options.within(seconds)
        assert refusal.value.code == "invalid_range"
    # A preview is a manner of asking, not a result of its own: its range names it, as any request's would.
    preview = Options.resolve({"preview": "true", "start": 60, "end": 90}, "htdemucs")
    assert preview.tag == Options.resolve({"start": 60, "end": 90}, "htdemucs").tag
    assert Options.resolve({"preview": True}, "htdemucs").result("a" * 56, "htdemucs").tag == ""
    # What a separation costs: Demucs' whole segments (7.8 s every 5.85 s), once per pass; a range's with what
    # Demucs hears around it (a segment, and the quarter where its cross-weighting differs).
    assert Options.resolve({"shifts": 2}, "htdemucs").work(100) == pytest.approx(2 * 18 * 7.8)
    assert Options.resolve({"start": 60, "end": 90, "shifts": 0}, "htdemucs").work(30) == pytest.approx(7 * 7.8)


def test_a_range_is_separated_with_the_segments_that_cover_it_in_the_whole_song():
    segment, stride = HTDEMUCS
    start, end = int(100.3 * SAMPLE_RATE), int(130.1 * SAMPLE_RATE)
    for reach in (0, stride):
        first, last = chunks.window(start, end, HTDEMUCS, reach)
        assert first % stride == 0 and first <= start - (segment - stride) - reach < first + stride
        # Demucs' last segment that covers the range ends inside the window (with what it hears beyond it).
        assert last - reach == (end - 1) // stride * stride + segment
    assert chunks.window(0, None, HTDEMUCS) == (0, None)
    assert chunks.window(SAMPLE_RATE, None, HTDEMUCS) == (0, None)  # near the start: from the start


def test_a_song_heard_sooner_starts_with_a_short_chunk_then_is_laid_out_as_alone():
    segment, stride = HTDEMUCS
    frames, overlap = 240 * SAMPLE_RATE, 5 * SAMPLE_RATE
    head, rest = chunks.plan(frames, 0, overlap, HTDEMUCS, first=10 * SAMPLE_RATE)
    assert head.start == 0 and rest.start % stride == 0 and rest.end == frames
    assert head.end - rest.start == segment  # one segment shared: the seam costs two segments separated twice
    assert 10 * SAMPLE_RATE <= chunks.final_until([head, rest], 0) == rest.fade_in[0] == rest.start + segment - stride
    assert rest.fade_in[1] == head.end - (segment - stride)  # clear of both chunks' edges
    # A long song in chunks keeps the chunks it would have had, after the first.
    chunked = chunks.plan(frames, 60 * SAMPLE_RATE, overlap, HTDEMUCS, first=10 * SAMPLE_RATE)
    alone = chunks.plan(frames - rest.start, 60 * SAMPLE_RATE, overlap, HTDEMUCS)
    assert [(part.start - rest.start, part.end - rest.start) for part in chunked[1:]] == [
        (part.start, part.end) for part in alone]
    assert chunks.plan(12 * SAMPLE_RATE, 0, overlap, HTDEMUCS, first=10 * SAMPLE_RATE) == [
        chunks.Chunk(0, 12 * SAMPLE_RATE)]  # too short for a first part


def test_a_preview_is_the_songs_loudest_30_seconds():
    quiet, loud = np.full((SAMPLE_RATE, 2), 0.01, "<f4"), np.full((SAMPLE_RATE, 2), 0.5, "<f4")
    weighed = Loudness()
    seconds = [quiet] * 41 + [loud] * 35 + [quiet] * 44  # 120 s, loud from 41 s to 76 s
    audio = np.concatenate(seconds)
    for at in range(0, len(audio), 100_000):  # in blocks that straddle seconds, as ffmpeg hands them over
        weighed(memoryview(audio[at:at + 100_000].tobytes()))
    assert weighed.loudest(30, 120.0) == (41.0, 71.0)
    assert Loudness().loudest(30, 29.5) == (0.0, None)  # a short song is previewed whole


# --- The door -----------------------------------------------------------------------------------------------------

def test_ranges_and_previews_at_the_door(settings, rest, redis_client, tmp_path):
    mp3 = song(50, tmp_path / "song.mp3").read_bytes()  # louder and louder: its loudest 30 s are its last
    songhash = songhash_of(mp3)
    for values in ({"start": 10, "end": 50.5}, {"start": 50.2}, {"end": 60}):
        refused = post(rest, mp3, **values)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_range"
        assert "past the song's end (50." in refused.json()["message"]
    assert post(rest, mp3, start=1, end=1).json()["error"] == "invalid_range"

    ranged = post(rest, mp3, start=12.5, end=20).json()
    assert (ranged["options"]["start"], ranged["options"]["end"], ranged["options"]["preview"]) == (12.5, 20, False)
    queued = status(rest, songhash, start=12.5, end=20)
    assert queued["state"] == "queued" and queued["eta_seconds"] > 0
    result = Options.resolve({"start": 12.5, "end": 20}, settings.demucs_model).result(songhash, settings.demucs_model)
    assert float(redis_client.hget(f"status:{result.id}", "seconds")) == 7.5  # turns, limits and quotas count it

    preview = post(rest, mp3, preview="true").json()
    assert preview["reason"] == "Song enqueued for separation"
    weighed = Loudness()
    audio.decode(str(tmp_path / "song.mp3"), 0, weighed)
    start, end = weighed.loudest(30, 50.0)
    assert (preview["options"]["start"], preview["options"]["end"]) == (start, end) and end - start == 30
    entries = JobQueue(redis_client, settings.worker_queue, settings.demucs_model).entries
    lanes = {entries.fields(entry, "lane")[0] for entry in redis_client.zrange(entries.key("lane:preview"), 0, -1)}
    assert lanes == {"preview"} and redis_client.zcard(entries.key("lane:preview")) == 1
    # Found again by preview=true, or by its range: one result, one job.
    assert status(rest, songhash, preview="true")["options"]["start"] == start
    again = post(rest, mp3, start=start, end=end).json()
    assert again["reason"] == "Song already queued with these options; not queued again"
    assert post(rest, mp3, preview=True).json()["reason"] == again["reason"]
    # The preview goes first, whatever waited before it.
    assert status(rest, songhash, start=start, end=end)["position"] == 1
    assert status(rest, songhash, start=12.5, end=20)["position"] == 2
    never = requests.get(f"http://{rest}/apiv1/status/{'b' * 56}", params={"preview": "true"})
    assert never.status_code == 404


def test_grpc_answers_a_previews_range_and_serves_parts(settings, rpc, tmp_path):
    mp3 = song(40, tmp_path / "song.mp3").read_bytes()
    service = stub(rpc)
    answer = service.Submit(rpc_requests(mp3, options=pb.Options(preview=True)))
    assert answer.queued and answer.options.preview and answer.options.end - answer.options.start == 30
    found = service.GetStatus(pb.StatusRequest(songhash=songhash_of(mp3), options=pb.Options(preview=True)))
    assert (found.options.start, found.options.end) == (answer.options.start, answer.options.end)
    assert found.eta_seconds > 0 and found.ready_seconds == 0
    with pytest.raises(grpc.RpcError) as refused:
        service.Submit(rpc_requests(mp3, options=pb.Options(start=10, end=45)))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and error_code(refused.value) == "invalid_range"


def test_a_stale_attempt_can_never_name_its_part_of_the_tracks(settings, redis_client, store, rpc, tmp_path):
    """The part a status names is the running attempt's: one whose lease ran out changes nothing, and the part
    only grows."""
    queue = JobQueue(redis_client, settings.worker_queue, settings.demucs_model)
    statuses = SongStatus(redis_client, queue, "callbacks")
    job = job_for("a" * 56, settings)
    queue.push(job)
    stale = queue.take("paused", 0.1)
    assert statuses.start(stale, "paused").started and statuses.ready(stale, 44100)
    time.sleep(0.2)
    statuses.reap(3)
    fresh = queue.take("other", 30)
    assert statuses.start(fresh, "other").started
    assert statuses.get(job.result.id)["ready"] == "0"  # a new attempt starts from nothing
    assert not statuses.ready(stale, 10 * 44100)
    assert statuses.ready(fresh, 2 * 44100) and statuses.ready(fresh, 44100)
    fields = statuses.get(job.result.id)
    assert (fields["ready"], fields["token"]) == (str(2 * 44100), fresh.taken.token)
    # The track route serves the part the status names, and no other attempt's.
    for token, text in ((stale.taken.token, b"stale"), (fresh.taken.token, b"fresh")):
        (tmp_path / "part").write_bytes(text)
        store.put_output(job.result.ready_key(token, 2 * 44100, "vocals", "mp3"), str(tmp_path / "part"), "mp3")
    address, server = serve(create_app(settings))
    try:
        served = requests.get(f"http://{address}/apiv1/track/{'a' * 56}/vocals.mp3")
        assert served.content == b"fresh" and served.headers["X-Ready-Seconds"] == "2.000"
        assert status(address, "a" * 56)["ready_seconds"] == 2.0
    finally:
        server.shutdown()
    parts = list(stub(rpc).DownloadTrack(pb.TrackRequest(songhash="a" * 56, track="vocals")))
    assert parts[0].info.ready_seconds == 2.0 and b"".join(part.chunk for part in parts[1:]) == b"fresh"
    watched = next(iter(stub(rpc).WatchStatus(pb.StatusRequest(songhash="a" * 56), timeout=10)))
    assert watched.ready_seconds == 2.0 and list(watched.tracks) == list(FOUR_STEMS)


# --- Real workers ---------------------------------------------------------------------------------------------------

def tiny(settings: Settings, model_repo: Path, segment: int) -> Settings:
    return replace(settings, demucs_model="tiny", demucs_repo=model_repo, demucs_segment=segment)


@pytest.mark.demucs
def test_a_ranges_stems_are_the_whole_songs_over_that_range(settings, model_repo, tmp_path):
    settings = tiny(settings, model_repo, 4)
    mp3 = song(26, tmp_path / "song.mp3").read_bytes()
    songhash, plain, ranged = songhash_of(mp3), {"format": "wav", "shifts": 0}, {"start": 7.3, "end": 16.1}
    address, server = serve(create_app(settings))
    worker = start_service("worker", settings, tmp_path / "worker.log", FIRST_PART_SECONDS="0")
    try:
        for options in (plain, {**plain, **ranged}):
            assert post(address, mp3, **options).status_code == 200
        done = [wait_for(lambda options=options: (s := status(address, songhash, **options))["state"] == "done" and s,
                         180, "the separations") for options in (plain, {**plain, **ranged})]
        tracks = [{track: requests.get(url).content for track, url in answer["tracks"].items()} for answer in done]
        usage = requests.get(f"http://{address}/apiv1/usage").json()
    finally:
        worker.stop()
        server.shutdown()
    assert done[1]["ready_seconds"] == pytest.approx(8.8)
    assert usage["audio_seconds"] == pytest.approx(26 + 8.8, abs=0.1)  # the range counts its own seconds
    start, end = round(7.3 * SAMPLE_RATE), round(16.1 * SAMPLE_RATE)
    for track in FOUR_STEMS:
        whole = samples_of(tracks[0][track]).reshape(-1, 2)[start:end].astype(np.float64)
        part = samples_of(tracks[1][track]).reshape(-1, 2).astype(np.float64)
        assert part.shape == whole.shape
        difference = signal_to_difference(whole, part)
        print(f"range {track}: {difference:.1f} dB")
        assert difference >= 60, track


@pytest.mark.demucs
@pytest.mark.timeout(900)  # htdemucs goes over 24 s of song, then over its range: minutes on 2 busy cores
def test_htdemucs_hears_a_range_as_it_does_in_the_whole_song(model_repo, tmp_path):
    """HTDemucs' segments hear only themselves, so its range is separated with less around it: still the same."""
    mp3 = song(24, tmp_path / "song.mp3")  # the range's window reaches its end (25.35 s)
    outputs = {}
    for name, values in (("whole", {}), ("range", {"start": 9.1, "end": 17.7})):
        options = Options.resolve({"format": "wav", "shifts": 0, **values}, "htdemucs")
        run = DemucsRun("htdemucs", mp3, tmp_path / name / "separated", options)
        outputs[name] = separate(run, FOUR_STEMS, SeparationConfig(DemucsConfig(repo=model_repo), cpus=2),
                                 tmp_path / f"{name}.log").tracks
    start, end = round(9.1 * SAMPLE_RATE), round(17.7 * SAMPLE_RATE)
    for track in FOUR_STEMS:
        whole, _ = sphn.read(str(outputs["whole"][track]))
        part, _ = sphn.read(str(outputs["range"][track]))
        difference = signal_to_difference(whole[:, start:end], part)
        print(f"htdemucs range {track}: {difference:.1f} dB")
        assert difference >= 60, track


@pytest.mark.demucs
def test_parts_of_the_tracks_are_served_as_they_are_ready_and_are_the_whole_tracks_start(
    settings, model_repo, store, tmp_path
):
    settings = tiny(settings, model_repo, 2)
    mp3 = song(21, tmp_path / "song.mp3").read_bytes()
    songhash, options = songhash_of(mp3), {"format": "wav", "shifts": 0}
    address, server = serve(create_app(settings))
    worker = start_service("worker", settings, tmp_path / "worker.log", FIRST_PART_SECONDS="2", CHUNK_SECONDS="7",
                           CHUNK_OVERLAP_SECONDS="1")
    seen, parts = [], {}
    try:
        assert post(address, mp3, **options).status_code == 200
        deadline = time.monotonic() + 180
        while (answer := status(address, songhash, **options))["state"] != "done" and time.monotonic() < deadline:
            if answer["state"] == "processing":
                seen.append(answer["ready_seconds"])
                if answer["ready_seconds"] > 0 and answer["ready_seconds"] not in parts:
                    served = requests.get(answer["tracks"]["vocals"])
                    assert served.status_code == 200
                    # What was served says its length, and is a valid file of that length.
                    length = float(served.headers["X-Ready-Seconds"])
                    assert length >= answer["ready_seconds"] and served.headers["Cache-Control"] == "no-store"
                    assert frames_of(served.content) == round(length * SAMPLE_RATE)
                    parts[length] = served.content
            time.sleep(0.1)
        whole = requests.get(answer["tracks"]["vocals"]).content
        assert "X-Ready-Seconds" not in requests.get(answer["tracks"]["vocals"]).headers
    finally:
        worker.stop()
        server.shutdown()
    assert answer["state"] == "done" and answer["ready_seconds"] == pytest.approx(21, abs=0.1)
    assert seen == sorted(seen) and len(parts) >= 2, (seen, list(parts))  # only grows; parts came one by one
    for length, part in parts.items():  # each part is the whole track's start, sample for sample
        frames = round(length * SAMPLE_RATE)
        assert np.array_equal(samples_of(part), samples_of(whole)[:2 * frames]), length
    # The parts go once the whole is served.
    assert not [item.object_name for item in store.client.list_objects(settings.output_bucket, recursive=True)
                if "/ready-" in item.object_name]
    assert re.search(r"job \w+: its first 2\.0 s are ready", (tmp_path / "worker.log").read_text())


@pytest.mark.demucs
@pytest.mark.timeout(600)
def test_a_preview_overtakes_five_queued_long_songs(settings, rest, tmp_path):
    """One worker, busy with a long song, five more queued: the preview is done before any of them, while the
    song it found running waits, stopped, and goes on after."""
    longs = [song(30 + index, tmp_path / f"long-{index}.mp3").read_bytes() for index in range(6)]
    slow = {"shifts": 10}  # ten passes over each long song
    worker = start_service("worker", settings, tmp_path / "worker.log")
    try:
        assert post(rest, longs[0], **slow).status_code == 200
        wait_for(lambda: status(rest, songhash_of(longs[0]), **slow).get("progress", 0) > 0, 120,
                 "the first long song under way")
        for mp3 in longs[1:]:
            assert post(rest, mp3, **slow).status_code == 200
        preview = song(35, tmp_path / "preview.mp3").read_bytes()
        assert post(rest, preview, preview="true").status_code == 200
        wait_for(lambda: status(rest, songhash_of(preview), preview="true")["state"] == "done", 240,
                 "the preview")
        first = status(rest, songhash_of(longs[0]), **slow)
        assert first["state"] == "processing"  # stopped for the preview, not done
        assert [status(rest, songhash_of(mp3), **slow)["position"] for mp3 in longs[1:]] == [1, 2, 3, 4, 5]
        # ...and it goes on.
        wait_for(lambda: status(rest, songhash_of(longs[0]), **slow)["progress"] > first["progress"], 120,
                 "the long song to go on")
    finally:
        for mp3 in longs:
            requests.post(f"http://{rest}/apiv1/cancel/{songhash_of(mp3)}")
        worker.stop()
    log = (tmp_path / "worker.log").read_text()
    assert "for a preview" in log and "goes on after" in log
    demucs = [pid for pid, (_, command) in processes().items()
              if "demucs.separate" in command and str(tmp_path) in command]
    assert not demucs, "a stopped separation outlived its worker"


@pytest.mark.demucs
def test_a_roformers_range_and_first_part_are_its_whole_songs(tmp_path):
    """Through worker/engines.py as Demucs' are: a range is the whole song's over it, the first part its start
    (float samples: a 16-bit part's gain may be higher than the whole's, worker/mixdown.py)."""
    model = "bs_roformer_unittest"
    config = SeparationConfig(cpus=2, roformer=RoformerConfig(random_models.write_roformer(tmp_path / "models")),
                              first_part_seconds=3)
    mp3 = song(20, tmp_path / "song.mp3")
    outputs, parts = {}, []
    for name, values in (("whole", {}), ("range", {"start": 6.3, "end": 13.7})):
        options = Options.resolve({"format": "wav", "sample_format": "float32", "model": model, **values}, "htdemucs")
        run = DemucsRun(model, mp3, tmp_path / name / "separated", options)
        hooks = Hooks(ready=lambda frames, files: parts.append(
            (frames, {track: sphn.read(str(path))[0].copy() for track, path in files.items()})))
        outputs[name] = separate(run, options.tracks(), config, tmp_path / f"{name}.log", hooks).tracks
    assert [frames for frames, _ in parts][:1] == [3 * SAMPLE_RATE]
    start, end = round(6.3 * SAMPLE_RATE), round(13.7 * SAMPLE_RATE)
    for track, path in outputs["whole"].items():
        whole, _ = sphn.read(str(path))
        part, _ = sphn.read(str(outputs["range"][track]))
        assert signal_to_difference(whole[:, start:end], part) >= 60, track
        assert signal_to_difference(whole[:, :3 * SAMPLE_RATE], parts[0][1][track]) >= 60, track


# --- Estimates ------------------------------------------------------------------------------------------------------

def test_estimates_count_the_work_ahead_at_each_workers_pace_and_previews_wait_for_no_song(settings, redis_client):
    model = settings.demucs_model
    queue = JobQueue(redis_client, settings.worker_queue, model)
    estimates = Estimates(redis_client, queue, 30, model)
    statuses = SongStatus(redis_client, queue, "callbacks")
    for work in (10, 40, 90):  # 2 s, and half a second per second of work: Demucs' run 0.4 of it, 0.1 after it
        estimates.record(model, 2 + 0.5 * work, work, 0.1 * work, 0.4 * work)
    assert fit([(wall, work) for wall, work in ((7, 10), (22, 40), (47, 90))]) == Speed(2.0, 0.5)

    def cost(options: Options, seconds: float, pace: float = 1.0) -> float:
        return 2 + pace * 0.5 * options.work(seconds)

    for worker in ("one", "two"):
        estimates.alive(worker)
    busy = Job.of("a" * 56, Options.resolve({"shifts": 2}, model), model, 100.0)
    queue.push(busy)
    assert statuses.start(queue.take("one", 30), "one").started  # just begun
    waiting = Job.of("b" * 56, Options.resolve({}, model), model, 20.0)
    preview = replace(Job.of("c" * 56, Options.resolve({"preview": True, "start": 0, "end": 30}, model), model, 30.0),
                      lane="preview")
    queue.push(waiting)
    queue.push(preview)
    # The preview (its range, and what Demucs hears around it) takes the free worker first; then the song waits for
    # the first worker free.
    previewing = cost(preview.options, 30)
    assert previewing < cost(busy.options, 100)
    assert estimates.queued(waiting.id, model, waiting.options.work(20)) == pytest.approx(
        previewing + cost(waiting.options, 20), abs=0.5)
    # A preview waits for no song: a busy worker pauses its own for it.
    redis_client.zrem(f"{settings.worker_queue}:workers", "two")
    assert estimates.workers() == 1
    assert estimates.queued(preview.id, model, preview.options.work(30)) == pytest.approx(previewing)

    # Under way: the model's estimate until Demucs draws its bars, then the pace kept since the first of them.
    now = time.time()
    assert estimates.processing(model, 100, 0, now - 20) == pytest.approx(52 - 20, abs=0.1)
    # Half of Demucs' run in 15 s: 15 s more, then the encoding, at the pace kept (its run usually takes 40 s).
    assert estimates.processing(model, 100, 50, now - 20, now - 15) == pytest.approx(15 + 0.75 * 0.1 * 100, abs=0.1)
    # The progress moves a segment at a time: half reached 5 s ago, 10 s after the first bar, is a 20 s run with 5 s
    # left, not a run as slow as if the last 5 s had made no progress (30 s, 15 s left).
    assert estimates.processing(model, 100, 50, now - 20, now - 15, now - 5) == pytest.approx(
        5 + 0.5 * 0.1 * 100, abs=0.1)
    # Early on, its pace (the first segments pay for the run's warm-up) is weighed against the model's speed.
    early = estimates.processing(model, 100, 10, now - 20, now - 15, now)  # 10 % in 15 s: a 150 s run at this pace
    assert 0.4 * 100 * 0.9 < early < 150 * 0.9
    # ...and a worker slower now than when its speed was learnt takes its next songs at its pace now.
    usual = 0.4 * busy.options.work(100)  # Demucs' run, as long as it usually takes
    redis_client.hset(f"status:{busy.result.id}", mapping={"progress": 50, "running_at": time.time() - usual})
    left = usual + 2 * 0.1 * busy.options.work(100)  # half the run took as long as a whole one: twice the time
    assert estimates.queued(waiting.id, model, waiting.options.work(20)) == pytest.approx(
        left + cost(preview.options, 30, pace=2) + cost(waiting.options, 20, pace=2), abs=1)


def test_the_cli_says_how_long_is_left_and_what_is_ready():
    assert describe({"state": "queued", "position": 3, "eta_seconds": 4000.2}) == (
        "queued, position 3, about 1 h 6 min left")
    assert describe({"state": "processing", "progress": 45.2, "eta_seconds": 99.6, "ready_seconds": 13.65}) == (
        "processing 45%, about 1 min 40 s left, 13.7 s ready")
    assert describe({"state": "processing", "progress": 5, "eta_seconds": None, "ready_seconds": 0}) == (
        "processing 5%")
    parsed = parser().parse_args(["status", "a" * 56, "--preview", "--start", "1234.5678", "--end", "1264"])
    assert options_of(parsed) == {"start": "1234.5678", "end": "1264", "preview": "true"}  # exact, not :g's
