"""Mixes rendered by the service (msaas/mixes.py) and waveforms, through both APIs, against real Redis and S3 servers
and the real ffmpeg; the tracks of a done song are planted as a worker leaves them (tests/support.py), or separated
by a real worker where what the worker computes is tested (the residual, the waveforms)."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import grpc
import imageio_ffmpeg
import numpy as np
import pytest
import requests

from msaas.cli import exits
from msaas.mixes import mix_key
from msaas.naming import songhash_of
from msaas.options import Options
from msaas.v1 import separation_pb2 as pb
from rest import create_app
from rpc_support import error_code, stub
from support import (
    ROOT,
    SHORT_SAMPLE,
    Statuses,
    planted_audio,
    queued,
    start_gunicorn,
    stored_result,
    wait_for,
    write_track,
)

RATE = 44100
STEMS = ("vocals", "drums", "bass", "other")
SONGHASH = hashlib.sha224(b"a planted song").hexdigest()
Code = grpc.StatusCode


@pytest.fixture
def planted(redis_client, store, tmp_path):
    """A done song of the open tenant, separated as WAV and as MP3 (two results): {format: {track: samples}}."""
    audio = planted_audio()
    for kind in ("wav", "mp3"):
        options = Options.resolve({"format": kind}, "demucs_unittest")
        paths = {name: write_track(samples, tmp_path / f"{name}.{kind}", kind) for name, samples in audio.items()}
        stored_result(redis_client, store, SONGHASH, paths, options=options)
    return audio


def decoded(data: bytes, tmp_path: Path, suffix: str) -> np.ndarray:
    """Audio as ffmpeg decodes it: float32 frames (16-bit samples come back as n / 32768, exactly)."""
    path = tmp_path / f"decoded-{hashlib.sha1(data).hexdigest()[:8]}.{suffix}"
    path.write_bytes(data)
    raw = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "2",
                          "-ar", str(RATE), "pipe:1"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype="<f4").reshape(-1, 2)


def mix(rest: str, recipe: object, **query) -> requests.Response:
    return requests.post(f"http://{rest}/apiv1/mix/{SONGHASH}", params=query, json=recipe, timeout=60)


def stored_mixes(store, settings) -> list[str]:
    return [item.object_name for item in store.client.list_objects(settings.output_bucket, recursive=True)
            if "/mixes/" in item.object_name]


def test_an_instrumental_is_exactly_the_sum_of_the_other_stems(planted, rest, rpc, store, settings, tmp_path):
    answer = mix(rest, {"preset": "instrumental", "format": "wav"}, format="wav")
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "audio/wav" and answer.headers["X-Mix-Cache"] == "miss"
    heard = decoded(answer.content, tmp_path, "wav") * 32768
    expected = sum(planted[name].astype(np.int64) for name in ("drums", "bass", "other"))
    assert np.array_equal(heard, expected)  # 16-bit in, 16-bit out, summed in double: exact, not within a tolerance
    assert queued(settings) == 0  # rendered from the stored tracks: nothing separated again
    # The same recipe written otherwise (a mute for the shortcut), over gRPC: the same stored object, not rendered.
    recipe = pb.MixRecipe(mute=["vocals"], gains={"drums": 0.0}, format="wav")
    parts = list(stub(rpc).RenderMix(pb.MixRequest(songhash=SONGHASH, options=pb.Options(format="wav"),
                                                   recipe=recipe)))
    info = parts[0].info
    assert (info.cache, info.digest, info.content_type) == ("hit", answer.headers["X-Mix-Digest"], "audio/wav")
    assert b"".join(part.chunk for part in parts[1:]) == answer.content and info.size == len(answer.content)
    assert stored_mixes(store, settings) == [mix_key(Options.resolve({"format": "wav"}, "demucs_unittest").result(
        SONGHASH, "demucs_unittest"), "7", info.digest, "wav")]


def test_an_mp3_instrumental_is_the_sum_of_the_other_stems_within_the_codecs_error(planted, rest, tmp_path):
    answer = mix(rest, {"preset": "instrumental"})  # the default result (MP3 tracks), an MP3 mix at 320 kbit/s
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "audio/mpeg"
    heard = decoded(answer.content, tmp_path, "mp3")
    tracks = {name: decoded(write_track(planted[name], tmp_path / f"{name}.mp3", "mp3").read_bytes(), tmp_path, "mp3")
              for name in ("drums", "bass", "other")}
    expected = sum(tracks.values())
    assert abs(len(heard) - len(expected)) <= 1152  # an MP3 frame of padding at most
    frames = min(len(heard), len(expected))
    difference = heard[:frames] - expected[:frames]
    ratio = 10 * np.log10(np.sum(expected[:frames] ** 2) / np.sum(difference**2))
    print(f"MP3 instrumental against the sum of the MP3 stems: {ratio:.1f} dB")  # pytest -s
    assert ratio >= 20, f"{ratio:.1f} dB"  # one more MP3 coding pass at 320 kbit/s: its error, no more


def test_gains_are_exact_in_decibels_and_mute_all_is_silence(planted, rest, tmp_path):
    recipe = {"gains": {"drums": -6, "bass": 3.5, "other": -120}, "mute": ["vocals"], "format": "wav",
              "sample_format": "float32"}
    answer = mix(rest, recipe, format="wav")
    assert answer.status_code == 200, answer.text
    heard = decoded(answer.content, tmp_path, "wav")
    gains = {"drums": 10 ** (-6 / 20), "bass": 10 ** (3.5 / 20), "other": 10**-6}
    expected = sum(planted[name] / 32768 * gain for name, gain in gains.items())
    assert np.abs(heard - expected).max() <= 1e-6  # float32's rounding of the double sum
    sixteen = decoded(mix(rest, {**recipe, "sample_format": "int16"}, format="wav").content, tmp_path, "wav")
    assert np.abs(sixteen * 32768 - expected * 32768).max() <= 0.5 + 1e-6  # rounded once, to the nearest sample
    silent = mix(rest, {"mute": list(STEMS), "format": "wav"}, format="wav")
    assert silent.status_code == 200
    quiet = decoded(silent.content, tmp_path, "wav")
    assert len(quiet) == len(planted["drums"]) and not quiet.any()


def test_identical_recipes_at_once_are_rendered_once(planted, settings, store, redis_client, tmp_path):
    """REST as deployed (gunicorn, gevent, two processes): eight identical requests at once, one render."""
    server = start_gunicorn(settings, tmp_path / "rest.log")  # 2 processes (rest/gunicorn.conf.py)
    try:
        rest = f"127.0.0.1:{server.port}"
        recipe = {"gains": {"drums": -3}, "mute": ["vocals"]}
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: mix(rest, recipe), range(8)))
    finally:
        server.stop()
    assert all(answer.status_code == 200 for answer in answers), [answer.text for answer in answers]
    outcomes = sorted(answer.headers["X-Mix-Cache"] for answer in answers)
    print("eight requests at once:", outcomes)  # pytest -s
    assert outcomes.count("miss") == 1 and set(outcomes) <= {"miss", "hit", "shared"}, outcomes
    assert len({answer.content for answer in answers}) == 1
    assert len(stored_mixes(store, settings)) == 1
    assert redis_client.keys("mixes:lock:*") == []
    assert (tmp_path / "rest.log").read_text().count(" rendered in ") == 1  # one ffmpeg run, logged by either process


@pytest.mark.parametrize(("recipe", "why", "in_grpc"), [
    ({"gains": {"guitar": -3}}, "no track 'guitar'", True),
    ({"mute": ["drums", "kazoo"]}, "no track 'kazoo'", True),
    ({"gains": {"drums": 1000}}, "from -120 to 24", True),
    ({"gains": {"drums": -1000}}, "from -120 to 24", True),
    ({"preset": "karaoke"}, "unknown preset", True),
    ({"format": "ogg"}, "format 'ogg'", True),
    ({"format": "mp3", "sample_format": "float32"}, "format wav only", True),
    ({"gains": {"drums": "loud"}}, "from -120 to 24", False),  # gRPC's types refuse these in the client
    ({"gains": {"drums": True}}, "from -120 to 24", False),
    ({"gain": {"drums": 1}}, "unknown recipe field", False),
    (["vocals"], "a JSON object", False),
])
def test_bad_recipes_are_refused_on_both_apis_and_store_nothing(planted, rest, rpc, store, settings, redis_client,
                                                               recipe, why, in_grpc):
    answer = mix(rest, recipe)
    assert answer.status_code == 400 and why in answer.json()["message"], answer.text
    if in_grpc:
        with pytest.raises(grpc.RpcError) as refused:
            list(stub(rpc).RenderMix(pb.MixRequest(songhash=SONGHASH, recipe=pb.MixRecipe(**recipe))))
        assert refused.value.code() == Code.INVALID_ARGUMENT and why in refused.value.details()
    assert stored_mixes(store, settings) == [] and redis_client.keys("mixes:*") == []


def test_nan_and_overflowing_gains_are_refused(planted, rest, rpc, store, settings):
    for body in ('{"gains": {"drums": NaN}}', '{"gains": {"drums": Infinity}}', '{"gains": {"drums": 1e400}}',
                 '{"gains": {"drums": 1' + "0" * 400 + "}}", '{"gains": {"drums": -0.0}, "mute": [[]]}'):
        answer = requests.post(f"http://{rest}/apiv1/mix/{SONGHASH}", data=body,
                               headers={"Content-Type": "application/json"})
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_recipe", (body, answer.text)
    for gain in (float("nan"), float("inf"), -1e9):
        with pytest.raises(grpc.RpcError) as refused:
            list(stub(rpc).RenderMix(pb.MixRequest(songhash=SONGHASH, recipe=pb.MixRecipe(gains={"drums": gain}))))
        assert refused.value.code() == Code.INVALID_ARGUMENT and error_code(refused.value) == "invalid_recipe"
    for body in (b"[" * 50000, b'{"mute": ["\xff\xfe"]}', b'{"gains": {"drums": -6}'):  # deep, not UTF-8, cut
        answer = requests.post(f"http://{rest}/apiv1/mix/{SONGHASH}", data=body)
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_json", (body[:20], answer.text)
    too_big = requests.post(f"http://{rest}/apiv1/mix/{SONGHASH}", data=b'{"mute": [' + b'"x",' * 30000 + b'"x"]}')
    assert too_big.status_code == 413
    assert stored_mixes(store, settings) == []


def test_a_song_not_done_or_not_the_tenants_is_refused(planted, settings, rest, rpc, redis_client, store):
    """Queued: 409 (FAILED_PRECONDITION); another tenant's song answers exactly as one never submitted: 404."""
    redis_client.hset(f"status:{SONGHASH}/demucs_unittest-all-flac", mapping={"state": "queued", "job_id": "j"})
    redis_client.sadd(f"owners:{SONGHASH}/demucs_unittest-all-flac", "open")
    answer = mix(rest, {}, format="flac")
    assert answer.status_code == 409 and answer.json()["error"] == "song_not_done", answer.text
    with pytest.raises(grpc.RpcError) as refused:
        list(stub(rpc).RenderMix(pb.MixRequest(songhash=SONGHASH, options=pb.Options(format="flac"))))
    assert refused.value.code() == Code.FAILED_PRECONDITION and error_code(refused.value) == "song_not_done"
    keyed = create_app(replace(settings, api_keys="someone-else")).test_client()
    unknown = hashlib.sha224(b"never submitted").hexdigest()
    for path in ("/apiv1/mix/{}", "/apiv1/waveform/{}/drums"):
        answers = [keyed.open(path.format(songhash), method="POST" if "mix" in path else "GET", json={},
                              headers={"Authorization": "Bearer someone-else"}) for songhash in (SONGHASH, unknown)]
        assert [answer.status_code for answer in answers] == [404, 404]
        others, never = (answer.get_json() for answer in answers)
        assert others["error"] == "song_not_found" and others == json.loads(json.dumps(never).replace(
            unknown, SONGHASH))
    assert stored_mixes(store, settings) == []


def test_a_link_instead_of_the_bytes_and_removing_the_song_removes_its_mixes(planted, rest, store, settings):
    answer = mix(rest, {"preset": "acappella"}, link="1")
    assert answer.status_code == 200, answer.text
    described = answer.json()
    assert described["cache"] == "miss" and described["filename"].startswith(f"{SONGHASH}-acappella-")
    assert requests.get(described["url"], timeout=30).content[:3] in (b"ID3", b"\xff\xfb")  # an MP3, from the store
    assert len(stored_mixes(store, settings)) == 1
    assert requests.delete(f"http://{rest}/apiv1/remove/{SONGHASH}").status_code == 200
    assert stored_mixes(store, settings) == []
    assert mix(rest, {"preset": "acappella"}).status_code == 404


@pytest.mark.demucs
def test_residual_and_stems_rebuild_the_song_and_each_track_has_a_small_waveform(settings, rest, rpc, worker,
                                                                                tmp_path):
    """A real separation as float32 WAV with the residual: the tracks sum to the song to 90 dB and more, as decoded
    where it came in, and the status says so on both APIs; each track's waveform is under 20 KB."""
    options = {"format": "wav", "sample_format": "float32", "residual": "1"}
    songhash = songhash_of(SHORT_SAMPLE.read_bytes())
    answer = requests.post(f"http://{rest}/apiv1/separate", params=options, data=SHORT_SAMPLE.read_bytes(),
                           headers={"Content-Type": "audio/mpeg"})
    assert answer.status_code == 200, answer.text
    status = wait_for(lambda: (s := requests.get(f"http://{rest}/apiv1/status/{songhash}", params=options).json())[
        "state"] == "done" and s, 180, "the song separated")
    assert set(status["tracks"]) == {*STEMS, "residual"}
    tracks = {name: decoded(requests.get(url).content, tmp_path, "wav") for name, url in status["tracks"].items()}
    song = decoded(SHORT_SAMPLE.read_bytes(), tmp_path, "mp3")
    total = sum(tracks.values())
    assert total.shape == song.shape
    rebuilt = 10 * np.log10(np.sum(song.astype(np.float64) ** 2) / np.sum((song - total.astype(np.float64)) ** 2))
    print(f"tracks against the song: {rebuilt:.1f} dB; the status says {status['reconstruction_db']} dB")
    assert rebuilt >= 90, f"{rebuilt:.1f} dB"
    assert status["reconstruction_db"] >= 90
    grpc_status = stub(rpc).GetStatus(pb.StatusRequest(songhash=songhash, options=pb.Options(
        format="wav", sample_format="float32", residual=1)))
    assert grpc_status.reconstruction_db == status["reconstruction_db"]
    # The same through the mix route: every track at 0 dB, in float32, is the song.
    everything = requests.post(f"http://{rest}/apiv1/mix/{songhash}", params=options,
                               json={"format": "wav", "sample_format": "float32"})
    assert everything.status_code == 200, everything.text
    mixed = decoded(everything.content, tmp_path, "wav").astype(np.float64)
    assert 10 * np.log10(np.sum(song.astype(np.float64) ** 2) / np.sum((song - mixed) ** 2)) >= 90
    for name in status["tracks"]:
        served = requests.get(f"http://{rest}/apiv1/waveform/{songhash}/{name}", params=options)
        assert served.status_code == 200 and served.headers["Content-Type"] == "application/json"
        assert len(served.content) <= 20_000
        waveform = served.json()
        assert waveform["track"] == name and len(waveform["min"]) == len(waveform["max"]) == waveform["buckets"]
        assert waveform["buckets"] == 2000 and abs(waveform["seconds"] - len(song) / RATE) < 0.01
        assert all(-127 <= low <= 0 <= high <= 127 for low, high in zip(waveform["min"], waveform["max"],
                                                                         strict=True))
        loudest = np.abs(tracks[name]).max()
        assert max(waveform["max"] + [-low for low in waveform["min"]]) == min(127, round(loudest * 127))
        message = stub(rpc).GetWaveform(pb.TrackRequest(songhash=songhash, track=name, options=pb.Options(
            format="wav", sample_format="float32", residual=1)))
        assert (list(message.min), list(message.max), message.buckets) == (waveform["min"], waveform["max"], 2000)
    assert Statuses(settings).get(f"{songhash}/demucs_unittest-all-wav-residual1-sample_formatfloat32")[
        "reconstruction_db"] == f"{status['reconstruction_db']:.2f}"


@pytest.mark.demucs
def test_the_cli_separates_a_song_then_mixes_it_over_either_api(settings, rest, rpc, worker, tmp_path):
    """`msaas mix song.mp3 --mute vocals --gain drums=-6`: the song separated first (it was not), then mixed; again
    over gRPC, the same recipe is the same stored mix, byte for byte."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MSAAS_URL": f"http://{rest}"}  # this checkout's `msaas`
    env.pop("MSAAS_API_KEY", None)

    def msaas(*arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "msaas.cli", *arguments], env=env, cwd=tmp_path,
                              capture_output=True, timeout=240, check=False)

    done = msaas("mix", str(SHORT_SAMPLE), "--mute", "vocals", "--gain", "drums=-6", "--out", "karaoke.wav", "-q")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == b"karaoke.wav" and (tmp_path / "karaoke.wav").read_bytes()[:4] == b"RIFF"
    songhash = songhash_of(SHORT_SAMPLE.read_bytes())
    again = msaas("mix", songhash, "--mute", "vocals", "--gain", "drums=-6", "--mix-format", "wav", "--out", "-",
                  "--server", f"grpc://{rpc}")
    assert again.returncode == 0 and again.stdout == (tmp_path / "karaoke.wav").read_bytes(), again.stderr
    described = json.loads(msaas("mix", str(SHORT_SAMPLE), "--gain", "drums=-6", "--mute", "vocals", "--out",
                                 "x.wav", "--json").stdout)
    assert described["cache"] == "hit" and described["path"] == "x.wav"
    assert (tmp_path / "x.wav").read_bytes() == (tmp_path / "karaoke.wav").read_bytes()
    refused = msaas("mix", songhash, "--gain", "drums")
    assert refused.returncode == exits.USAGE and b"TRACK=DECIBELS" in refused.stderr
    refused = msaas("mix", songhash, "--gain", "drums=nan")
    assert refused.returncode == exits.USAGE and b"invalid_recipe" in refused.stderr
    refused = msaas("mix", hashlib.sha224(b"unknown").hexdigest(), "--preset", "instrumental")
    assert refused.returncode == exits.NOT_FOUND
