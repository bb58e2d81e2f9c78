"""What the door refuses, and how: anything that is not MP3 audio, with a sentence that says why; never a crash of
the process that serves it, whatever its environment; no more decodes at once than it allows (msaas/audio.py)."""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
import time
from pathlib import Path

import odd_mp3s
import pytest
import requests
from test_abuse import start_gunicorn
from test_observability import children

from msaas import audio
from msaas.naming import songhash_of
from support import ROOT, SHORT_SAMPLE, processes, wait_for

SONG = SHORT_SAMPLE.read_bytes()


@pytest.fixture(scope="module")
def unplayable(tmp_path_factory) -> dict[str, tuple[bytes, str]]:
    return odd_mp3s.unplayable(tmp_path_factory.mktemp("unplayable"))


def assert_sentence(message: str, upload: str = "") -> None:
    """A reason a client can read: one line of words, not a line of code, a traceback or a server's file name."""
    assert "\n" not in message and "Traceback" not in message and "raise " not in message, message
    assert "/tmp" not in message and (not upload or upload not in message), message
    assert message[:1].islower() and len(message.split()) >= 5, message


@pytest.mark.parametrize("name", [
    "text", "noise", "an-id3v2-tag-and-nothing-else", "truncated-to-a-frame-header", "pcm-wav", "flac", "ogg-vorbis",
    "mp2", "hls-playlist-naming-an-mp3", "ffconcat-naming-an-mp3",
])
def test_what_is_not_mp3_audio_is_refused_with_a_sentence_and_leaves_nothing(
    client, store, redis_client, settings, unplayable, name
):
    mp3, words = unplayable[name]
    answer = client.post("/apiv1/separate", data=mp3, content_type="audio/mpeg")
    assert answer.status_code == 400, answer.get_data(as_text=True)
    body = answer.get_json()
    assert body["error"] == "invalid_mp3" and words in body["message"], body
    assert_sentence(body["message"])
    assert not store.has_input(songhash_of(mp3))
    assert redis_client.llen(settings.worker_queue) == 0


@pytest.mark.parametrize(("cut", "words"), [
    (SONG[:600], "only 0.05 s of it decodes"),  # a frame and a half: a cut-off file
    (SONG[:1254] + bytes(range(256)) * 400, "does not decode"),  # three frames, then bytes that are not audio
])
def test_a_cut_off_or_mostly_undecodable_mp3_is_refused_with_a_sentence(client, cut, words):
    answer = client.post("/apiv1/separate", data=cut, content_type="audio/mpeg")
    assert answer.status_code == 400, answer.get_data(as_text=True)
    assert answer.get_json()["error"] == "invalid_mp3" and words in answer.get_json()["message"]
    assert_sentence(answer.get_json()["message"])


def test_what_ffmpeg_says_is_told_as_a_sentence_without_the_servers_file_name():
    said = "[in#0 @ 0x55d] Something odd in file:/tmp/spool/x.mp3\n[aist#0:0/mp3 @ 0x5] [dec:mp3 @ 0x6] Odd frame\n"
    assert audio.refusal(1, said, "/tmp/spool/x.mp3") == "mp3 does not decode as MP3 audio: Odd frame"
    assert audio.refusal(1, said.split("\n")[0], "/tmp/spool/x.mp3") == (
        "mp3 does not decode as MP3 audio: Something odd in the upload")
    assert audio.refusal(-11, "", "/tmp/x.mp3").endswith("MP3 audio: the decoder crashed on it (signal 11)")
    assert audio.refusal(1, "", "/tmp/x.mp3") == "mp3 does not decode as MP3 audio: ffmpeg exited with code 1"


def test_no_environment_variable_changes_what_the_decoder_decides(tmp_path, monkeypatch):
    """ffmpeg runs with an empty environment: FFREPORT (a log file per run), AV_LOG_FORCE_COLOR (escape codes in
    its messages) and the like, set for REST, reach it not."""
    report = tmp_path / "ffreport.log"
    monkeypatch.setenv("FFREPORT", f"file={report}:level=32")
    monkeypatch.setenv("AV_LOG_FORCE_COLOR", "1")
    (tmp_path / "song.mp3").write_bytes(b"hello, I am a text file\n" * 40)
    with pytest.raises(audio.BadRequest) as refusal:
        audio.measure(str(tmp_path / "song.mp3"), 60)
    assert refusal.value.message == "mp3 is not an MP3 file: no two consecutive MPEG audio frames found"
    assert not report.exists()


def test_the_services_load_no_native_decoder():
    """Item 7 of issue 20 at its root: what REST and gRPC load decodes nothing in their own process."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, rest, rpc, rpc.service, msaas.songs; print(sorted(sys.modules))"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout
    assert "'sphn'" not in loaded and "'msaas.audio'" in loaded


def test_decodes_at_the_door_run_no_more_than_door_decodes_at_a_time(tmp_path):
    song = tmp_path / "song.mp3"
    song.write_bytes(odd_mp3s.lame(120))
    running, done = set(), threading.Event()

    def watch() -> None:
        while not done.is_set():
            running.add(frozenset(pid for pid, (parent, command) in processes().items()
                                  if "ffmpeg" in command and "-format_whitelist" in command))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=audio.measure, args=(str(song), 600)) for _ in range(3 * audio.DOOR_DECODES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    watcher.join()
    assert max(len(pids) for pids in running) == audio.DOOR_DECODES  # they did overlap, up to the bound
    assert len(set().union(*running)) >= 2 * audio.DOOR_DECODES  # and the watcher saw most of them


def test_rust_backtrace_and_an_undecodable_upload_do_not_crash_a_gunicorn_worker(settings, tmp_path):
    """Issue 20, item 7: with RUST_BACKTRACE=1 in REST's environment, an upload that passed for an MP3 at a glance
    and did not decode crashed a gevent worker with SIGSEGV (sphn, in the worker's process), resetting the other
    requests it held. Each is answered 400 now, and the worker processes are the ones that started."""
    rest = start_gunicorn(settings, tmp_path / "rest.log", RUST_BACKTRACE="1")
    try:
        workers = wait_for(lambda: len(found := children(rest.process.pid)) == 2 and found, 30, "two workers")
        bodies = [SONG[:600], SONG[:1254] + bytes(range(256)) * 400, SONG[:417] + SONG[:417] + b"\xff\xfb" * 3000]
        for body in bodies * 3:  # both worker processes answer some
            answer = requests.post(f"http://127.0.0.1:{rest.port}/apiv1/separate",
                                   json={"mp3": base64.b64encode(body).decode()}, timeout=60)
            assert answer.status_code == 400, answer.text
            assert_sentence(answer.json()["message"])
        wait_for(lambda: requests.get(f"http://127.0.0.1:{rest.port}/healthz", timeout=5).ok, 10, "REST")
        assert children(rest.process.pid) == workers
    finally:
        rest.stop()
    log = Path(tmp_path / "rest.log").read_text()
    assert "SIGSEGV" not in log and "was sent" not in log, log[-2000:]
