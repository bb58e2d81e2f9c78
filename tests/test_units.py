"""Pure functions of the contract: names, parsing, MP3 frames, settings, Demucs command and failures."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from msaas.errors import BadRequest, ConfigError, InvalidJob
from msaas.jobs import Callback, Job
from msaas.naming import Result, check_songhash, input_key, parse_track, songhash_of
from msaas.options import SPECS, Options
from msaas.settings import FIELDS, Settings
from worker.demucs_run import DemucsConfig, DemucsRun, explain_failure


def test_songhash_is_the_sha224_hex_digest():
    assert songhash_of(b"abc") == hashlib.sha224(b"abc").hexdigest()
    assert len(songhash_of(b"")) == 56
    assert check_songhash("E5F013B19E55E5B7354EAF303C86B2B93F1D2847D8C9FA58C77A0ADD") == (
        "e5f013b19e55e5b7354eaf303c86b2b93f1d2847d8c9fa58c77a0add"
    )


def test_object_keys_follow_the_contract():
    assert input_key("ab") == "ab.mp3"
    assert Result("ab").key("vocals", "mp3") == "ab-vocals.mp3"
    assert Result("ab", "htdemucs-all-wav").key("vocals", "wav") == "ab/htdemucs-all-wav/vocals.wav"
    for result in (Result("a" * 56), Result("a" * 56, "htdemucs_6s-all-mp3320")):
        assert Result.parse(result.id) == result
    for bad in ("x", "a" * 56 + "/../x", "a" * 56 + "/x/y"):
        with pytest.raises(ValueError):
            Result.parse(bad)


def test_options_resolve_once_to_concrete_values_whatever_the_default():
    plain = Options.resolve({}, "htdemucs")
    # Every option the table's default, the model the one given (the table is msaas/options.py: not repeated here).
    assert plain.as_fields() == {spec.name: "htdemucs" if spec.name == "model" else spec.default for spec in SPECS}
    assert plain.result("a" * 56, "htdemucs") == Result("a" * 56)  # the reference's names
    # Query-string text and JSON values mean the same; absent, null and "" mean the default.
    assert Options.resolve({"mp3_bitrate": "192", "two_stems": ""}, "htdemucs") == Options.resolve(
        {"mp3_bitrate": 192, "two_stems": None}, "htdemucs")
    wav = Options.resolve({"format": "wav"}, "htdemucs")
    assert wav.mp3_bitrate is None and wav.result("a" * 56, "htdemucs").tag == "htdemucs-all-wav"
    six = Options.resolve({"model": "htdemucs_6s"}, "htdemucs")
    assert six.tracks() == ("vocals", "drums", "bass", "other", "guitar", "piano")
    assert six.result("a" * 56, "htdemucs").tag == "htdemucs_6s-all-mp3320"
    # What a default names is decided where a job is accepted: under another default, the same options are
    # another result, never the plain one.
    explicit = Options.resolve({"model": "htdemucs"}, "demucs_unittest")
    assert explicit.result("a" * 56, "demucs_unittest").tag == "htdemucs-all-mp3320"
    assert Options.resolve(explicit.as_query(), "demucs_unittest") == explicit
    # An option added after the first tags names its result only when it is not its default.
    assert Options.resolve({"overlap": "0.5"}, "htdemucs").result("a" * 56, "htdemucs").tag == (
        "htdemucs-all-mp3320-overlap0.5")
    assert Options.resolve({"overlap": 0.25}, "htdemucs").result("a" * 56, "htdemucs").tag == ""


HOSTILE_VALUES = [1e999, float("inf"), float("nan"), 10**400, -(10**400), -1, -0.5, 1.5, True,
                  [], ["wav"], {"a": 1}, "", " ", "x" * 10000,
                  "320.5", "1e3", "0x140", 320.5, "nope"]
# ...but a range's ends take any time in the song, and a flag takes true.
VALID = {"start": [1.5, "320.5", "1e3", 320.5], "end": [1.5, "320.5", "1e3", 320.5], "preview": [True]}


@pytest.mark.parametrize("name", [spec.name for spec in SPECS])
@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_every_option_refuses_every_wrong_value_with_a_bad_request(name, value):
    """Non-finite numbers, wrong JSON types and junk text in every option: a 400, never another exception."""
    try:
        options = Options.resolve({name: value}, "htdemucs")
    except BadRequest as refusal:
        assert refusal.code in ("invalid_option", "invalid_model", "invalid_range") and len(refusal.message) < 300
        assert not any(value is valid for valid in VALID.get(name, ()))
    else:  # "" means the default; nothing else in the list is a valid value of any option but those of VALID
        assert (value == "" and options == Options.resolve({}, "htdemucs")) or any(
            value is valid for valid in VALID.get(name, ()))


def test_options_that_contradict_each_other_are_refused():
    with pytest.raises(BadRequest, match="mp3 only"):
        Options.resolve({"format": "wav", "mp3_bitrate": 192}, "htdemucs")
    with pytest.raises(BadRequest, match="not a source of model"):
        Options.resolve({"two_stems": "piano"}, "htdemucs")


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
    options = Options.resolve({"two_stems": "vocals"}, "htdemucs")
    job = Job.of("a" * 56, options, "htdemucs", 12.5, Callback("http://x/", {"k": 1}))
    # Decoded where another default model rules, it is still the job REST accepted.
    assert Job.from_json(job.to_json(), "demucs_unittest") == job
    reference = Job.from_json('{"hash": "' + "b" * 56 + '"}', "demucs_unittest")
    assert reference.songhash == "b" * 56 and reference.options.model == "demucs_unittest"
    assert reference.result == Result("b" * 56)


@pytest.mark.parametrize(
    "raw", ["nope", "[]", "{}", '{"songhash": "xyz"}', '{"hash": "' + "a" * 56 + '", "model": "x"}',
            '{"hash": "' + "a" * 56 + '", "mp3_bitrate": 1e999}',
            '{"hash": "' + "a" * 56 + '", "seconds": 1' + "0" * 400 + '}',
            '{"hash": "' + "a" * 56 + '", "overlap": 1' + "0" * 400 + '}',
            '{"hash": "' + "a" * 56 + '", "result": "' + "b" * 56 + '"}',
            '{"hash": "' + "a" * 56 + '", "result": "' + "a" * 56 + '/mdx-all-mp3320"}',
            '{"hash": "' + "a" * 56 + '", "callback": {"url": "http://[::1"}}', "[" * 100000]
)
def test_bad_jobs_are_refused_as_invalid_jobs(raw):
    with pytest.raises(InvalidJob):
        Job.from_json(raw, "htdemucs")


@pytest.mark.parametrize("url", ["http://[::1", "http://[zz]/", "http://h:99999/", "ftp://h/", "http://", 7, None])
def test_malformed_callback_urls_are_bad_requests(url):
    with pytest.raises(BadRequest, match="not an http|malformed port"):
        Callback.parse({"url": url})


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
    run = DemucsRun("htdemucs", Path("/tmp/x/song.mp3"), Path("/tmp/x/out"), Options.resolve({}, "htdemucs"),
                    jobs=2)
    command = run.command(DemucsConfig.of(settings))
    assert command[1:3] == ["-m", "demucs.separate"]
    assert command[3:] == [
        "--float32", "--clip-mode", "none", "-n", "htdemucs", "-o", "/tmp/x/out", "-d", "cuda", "--shifts", "1",
        "--overlap", "0.25", "-j", "2", "--segment", "7", "--repo", "/models", "/tmp/x/song.mp3",
    ]
    assert run.track_path("vocals") == Path("/tmp/x/out/htdemucs/song/vocals.wav")


def test_failure_explanations():
    offline = "Traceback...\r  5%|#\nurllib.error.URLError: <urlopen error [Errno -2] Name or service not known>\n"
    assert explain_failure("htdemucs", 1, offline).startswith("could not download the weights of model htdemucs")
    assert "Name or service not known" in explain_failure("htdemucs", 1, offline)
    assert explain_failure("x", -9, "100%|###|\r").startswith("demucs was killed (signal 9: out of memory")
    assert explain_failure("x", -15, "100%|###|\r") == "demucs was killed by signal 15: 100%|###|"
    assert explain_failure("x", 2, "boom\n\n") == "demucs exited with code 2: boom"
    # What Demucs 4.1 prints for an input it cannot decode: the reason is the error's message, never a code line.
    undecodable = (
        "Separating track /x/noise.wav\nTraceback (most recent call last):\n"
        '  File "/venv/demucs/api.py", line 304, in separate_audio_file\n'
        "    return self.separate_tensor(self._load_audio(file), self.samplerate)\n"
        "                                ^^^^^^^^^^^^^^^^^^^^^^\n"
        '  File "/venv/demucs/api.py", line 233, in _load_audio\n    raise LoadAudioError(\n'
        'demucs.api.LoadAudioError: When trying to load using sphn, got the following error: "/x/noise.wav": end of '
        "stream\nWhen trying to load using ffmpeg, got the following error: FFmpeg is not installed.\n"
    )
    assert explain_failure("x", 1, undecodable) == (
        "the input does not decode as audio: sphn: end of stream; ffmpeg: FFmpeg is not installed.")
    crashed = 'Traceback (most recent call last):\n  File "/venv/x.py", line 3, in f\n    raise RuntimeError(\n'
    assert explain_failure("x", 1, crashed + "RuntimeError: no cheese\n") == "demucs exited with code 1: no cheese"
    assert explain_failure("x", 1, crashed) == "demucs exited with code 1"  # cut short: no code line either
    segfault = 'Fatal Python error: Segmentation fault\n\nCurrent thread 0x7f (most recent call first):\n  File "x.py"'
    assert explain_failure("x", -11, segfault) == "demucs was killed by signal 11: Segmentation fault"
