"""Pure functions of the contract: names, parsing, MP3 frames, settings, Demucs command and failures."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from msaas.errors import BadRequest, ConfigError
from msaas.jobs import Callback, Job, check_songhash, input_key, output_key, parse_track, songhash_of
from msaas.mp3 import first_frame, frame_length, id3_length
from msaas.settings import FIELDS, Settings
from worker.demucs_run import DemucsRun, explain_failure


def test_songhash_is_the_sha224_hex_digest():
    assert songhash_of(b"abc") == hashlib.sha224(b"abc").hexdigest()
    assert len(songhash_of(b"")) == 56
    assert check_songhash("E5F013B19E55E5B7354EAF303C86B2B93F1D2847D8C9FA58C77A0ADD") == (
        "e5f013b19e55e5b7354eaf303c86b2b93f1d2847d8c9fa58c77a0add"
    )


def test_object_keys_follow_the_contract():
    assert input_key("ab") == "ab.mp3"
    assert output_key("ab", "vocals") == "ab-vocals.mp3"


@pytest.mark.parametrize(
    ("name", "track"),
    [
        ("vocals", ("vocals", None)),
        ("drums.mp3", ("drums", "mp3")),
        ("base.mp3", ("bass", "mp3")),
        ("Other.MP3", ("other", "mp3")),
        ("no_vocals.wav", ("no_vocals", "wav")),
        ("piano.flac", ("piano", "flac")),
    ],
)
def test_track_names(name, track):
    assert parse_track(name) == track


@pytest.mark.parametrize("name", ["tuba", "vocals.ogg", "", "../vocals", "no_tuba"])
def test_bad_track_names(name):
    with pytest.raises(BadRequest):
        parse_track(name)


def test_job_round_trips_and_accepts_the_reference_key_hash():
    job = Job("a" * 56, "htdemucs", Callback("http://x/", {"k": 1}))
    assert Job.from_json(job.to_json()) == job
    assert Job.from_json('{"hash": "' + "b" * 56 + '"}').songhash == "b" * 56


@pytest.mark.parametrize(
    "raw", ["nope", "[]", "{}", '{"songhash": "xyz"}', '{"hash": "' + "a" * 56 + '", "model": "x"}']
)
def test_bad_jobs_are_refused(raw):
    with pytest.raises(BadRequest):
        Job.from_json(raw)


def test_mpeg1_layer3_frame_length():
    # 128 kbit/s, 44.1 kHz, no padding: 144 * 128000 / 44100 = 417 bytes
    assert frame_length(bytes([0xFF, 0xFB, 0x90, 0x00])) == 417
    assert frame_length(bytes([0xFF, 0xFB, 0x92, 0x00])) == 418  # padded
    assert frame_length(bytes([0xFF, 0xFD, 0x90, 0x00])) is None  # layer II
    assert frame_length(bytes([0xFF, 0xFB, 0xF0, 0x00])) is None  # bad bitrate index
    assert frame_length(b"ID3\x04") is None


def test_id3_tag_is_skipped():
    tag = b"ID3\x04\x00\x00\x00\x00\x01\x00" + b"\x00" * 128  # syncsafe size 128
    assert id3_length(tag) == 138
    frame = bytes([0xFF, 0xFB, 0x90, 0x00]) + b"\x00" * 413
    assert first_frame(tag + frame + frame) == 138
    assert first_frame(tag + b"junk") is None


def test_settings_from_env_and_back():
    settings = Settings.from_env({"REDIS_PORT": "7000", "S3_SECURE": "true", "DEMUCS_REPO": "/models"})
    assert settings.redis_port == 7000 and settings.s3_secure is True and settings.demucs_repo == Path("/models")
    assert settings.hostname  # defaults to the machine's name
    assert Settings.from_env(settings.to_env()) == settings
    assert set(settings.to_env()) <= set(FIELDS)


@pytest.mark.parametrize(("name", "value"), [("REDIS_PORT", "six"), ("S3_SECURE", "maybe"), ("CALLBACK_TIMEOUT", "x")])
def test_malformed_setting_names_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_store_credentials_are_required():
    with pytest.raises(ConfigError, match="S3_ACCESS_KEY"):
        Settings.from_env({}).require_store_credentials()


def test_demucs_command_carries_the_settings():
    settings = Settings(demucs_device="cuda", demucs_segment=7, demucs_repo=Path("/models"))
    run = DemucsRun("htdemucs", Path("/tmp/x/song.mp3"), Path("/tmp/x/out"))
    command = run.command(settings)
    assert command[1:3] == ["-m", "demucs.separate"]
    assert command[3:] == [
        "--mp3", "-n", "htdemucs", "-o", "/tmp/x/out", "-d", "cuda", "--shifts", "1", "--segment", "7",
        "--repo", "/models", "/tmp/x/song.mp3",
    ]
    assert run.track_path("vocals") == Path("/tmp/x/out/htdemucs/song/vocals.mp3")


def test_failure_explanations():
    offline = "Traceback...\r  5%|#\nurllib.error.URLError: <urlopen error [Errno -2] Name or service not known>\n"
    assert explain_failure("htdemucs", 1, offline).startswith("could not download the weights of model htdemucs")
    assert "Name or service not known" in explain_failure("htdemucs", 1, offline)
    assert explain_failure("x", -9, "100%|###|\r").startswith("demucs was killed (signal 9: out of memory")
    assert explain_failure("x", -15, "100%|###|\r") == "demucs was killed by signal 15: 100%|###|"
    assert explain_failure("x", 2, "boom\n\n") == "demucs exited with code 2: boom"
    undecodable = (
        'demucs.api.LoadAudioError: When trying to load using sphn, got the following error: "/x.mp3": no n-frames\n'
        "When trying to load using ffmpeg, got the following error: FFmpeg is not installed.\n"
    )
    assert explain_failure("x", 1, undecodable) == 'the input does not decode as audio: "/x.mp3": no n-frames'


def test_readme_documents_every_setting():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert [name for name in FIELDS if f"| `{name}` |" not in readme] == []
