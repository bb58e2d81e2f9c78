"""The `msaas` command, as installed by `make install` (pip's console script), against the live stack: the REST
app over HTTP and a real worker. Its output and exit codes are what scripts rely on."""

from __future__ import annotations

import argparse
import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import sphn

from msaas.cli import commands, exits
from msaas.cli.exits import Failure
from msaas.cli.progress import Progress
from msaas.models import FOUR_STEMS
from msaas.naming import songhash_of
from msaas.options import SPECS
from support import ROOT, SHORT_SAMPLE, start_service, wait_for

pytestmark = pytest.mark.demucs

MSAAS = Path(sys.executable).parent / "msaas"
MARCH = ROOT / "data" / "short-march.mp3"
HUM_HASH = songhash_of(SHORT_SAMPLE.read_bytes())
MARCH_HASH = songhash_of(MARCH.read_bytes())


def msaas(rest: str, *arguments: str, cwd: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    if not MSAAS.is_file():
        pytest.fail(f"{MSAAS} is missing: run `make install` (it installs this package's console script)")
    # This checkout's package, not the one the shared virtual environment's console script was installed from.
    env = {**os.environ, "MSAAS_URL": f"http://{rest}", "PYTHONPATH": str(ROOT)}
    env.pop("MSAAS_API_KEY", None)
    return subprocess.run(
        [str(MSAAS), *arguments], env=env, cwd=cwd, capture_output=True, timeout=180, check=False, **kwargs
    )


def decodes(path: Path, seconds: float = 8.0) -> bool:
    audio, rate = sphn.read(str(path))
    return abs(audio.shape[-1] / rate - seconds) < 0.3


def test_separate_shows_progress_and_saves_the_stems(settings, rest, worker, tmp_path):
    done = msaas(rest, "separate", str(SHORT_SAMPLE), "--out", str(tmp_path / "stems"), text=True)
    assert done.returncode == exits.OK, done.stderr
    saved = done.stdout.split()
    assert saved == [str(tmp_path / "stems" / f"{track}.mp3") for track in sorted(FOUR_STEMS)]
    assert all(decodes(Path(path)) for path in saved)
    # Not a terminal: plain lines, one per step, nothing redrawn.
    progress = done.stderr.splitlines()
    assert progress[0] == f"short-hum.mp3: Song enqueued for separation (songhash {HUM_HASH})"
    assert any(line.startswith("short-hum.mp3: processing ") for line in progress), progress
    assert progress[-1] == f"short-hum.mp3: done: 4 tracks in {tmp_path / 'stems'}"
    assert "\r" not in done.stderr

    # The default output folder is separated/<song name>, as Demucs' own CLI does; the song is not queued again.
    again = msaas(rest, "separate", str(SHORT_SAMPLE), cwd=tmp_path, text=True)
    assert again.returncode == exits.OK, again.stderr
    assert "already separated" in again.stderr
    assert sorted(path.name for path in (tmp_path / "separated" / "short-hum").iterdir()) == sorted(
        f"{track}.mp3" for track in FOUR_STEMS
    )


def test_separate_with_options_and_json(settings, rest, worker, tmp_path):
    done = msaas(
        rest, "separate", str(MARCH), "--two-stems", "drums", "--format", "wav", "--json", "--quiet",
        "--out", str(tmp_path), text=True,
    )
    assert done.returncode == exits.OK, done.stderr
    assert done.stderr == ""
    result = json.loads(done.stdout)
    assert result == {
        "hash": MARCH_HASH, "state": "done",
        "tracks": {"drums": str(tmp_path / "drums.wav"), "no_drums": str(tmp_path / "no_drums.wav")},
    }
    assert all(decodes(Path(path)) for path in result["tracks"].values())

    status = msaas(rest, "status", MARCH_HASH, "--two-stems", "drums", "--format", "wav", "--json", text=True)
    assert status.returncode == exits.OK
    assert json.loads(status.stdout)["state"] == "done"


def test_progress_bar_is_redrawn_on_a_terminal(settings, rest, worker, tmp_path):
    controller, terminal = pty.openpty()
    # This checkout's package, not the one the shared virtual environment's console script was installed from.
    env = {**os.environ, "MSAAS_URL": f"http://{rest}", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [str(MSAAS), "separate", str(MARCH), "--out", str(tmp_path)], env=env, stdout=subprocess.PIPE,
        stderr=terminal,
    )
    os.close(terminal)
    shown = b""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the other end is closed: the command is done
                break
            if not chunk:
                break
            shown += chunk
        elif process.poll() is not None:
            break
    os.close(controller)
    assert process.wait(30) == exits.OK
    text = shown.decode()
    assert text.count("\r\x1b[K") >= 2, text  # the same line, redrawn
    assert "short-march.mp3 [" + "#" * 30 + "] 100% done" in text
    assert text.rstrip().endswith(f"short-march.mp3: done: 4 tracks in {tmp_path}")


def test_status_queue_get_rm_and_their_exit_codes(settings, rest, tmp_path):
    """No worker: the song stays queued, so every answer can be checked against a known state."""
    queued = msaas(rest, "separate", str(SHORT_SAMPLE), "--no-wait", text=True)
    assert (queued.returncode, queued.stdout) == (exits.OK, HUM_HASH + "\n")  # `$(msaas separate --no-wait ...)`
    assert msaas(rest, "queue", text=True).stdout == HUM_HASH + "\n"
    listing = json.loads(msaas(rest, "queue", "--json", text=True).stdout)
    assert listing["queue"] == [HUM_HASH] and listing["next"] is None
    assert [(song["songhash"], song["state"], song["position"]) for song in listing["songs"]] == [
        (HUM_HASH, "queued", 1)]
    status = msaas(rest, "status", HUM_HASH, text=True)
    assert status.returncode == exits.OK
    assert re.fullmatch(r"queued, position 1, about \d+ s left\n", status.stdout)  # the estimate (msaas/eta.py)

    waited = msaas(rest, "separate", str(SHORT_SAMPLE), "--timeout", "1", "--interval", "0.2", text=True)
    assert waited.returncode == exits.TIMEOUT
    assert f"msaas: timeout: song {HUM_HASH} still queued, position 1, about " in waited.stderr

    unknown = "0" * 56
    missing = msaas(rest, "status", unknown, text=True)
    assert missing.returncode == exits.NOT_FOUND
    assert missing.stderr.startswith("msaas: song_not_found: song 000")
    as_json = msaas(rest, "status", unknown, "--json", text=True)
    assert json.loads(as_json.stdout) == {
        "error": "song_not_found", "message": json.loads(as_json.stdout)["message"], "exit_code": exits.NOT_FOUND,
    }
    assert msaas(rest, "status", "not-a-hash", text=True).returncode == exits.USAGE
    assert msaas(rest, "separate", str(tmp_path / "absent.mp3"), text=True).returncode == exits.USAGE
    assert msaas(rest, "separate", "--format", "ogg", str(SHORT_SAMPLE), text=True).returncode == exits.USAGE

    not_ready = msaas(rest, "get", HUM_HASH, "vocals", "--out", str(tmp_path / "vocals.mp3"), text=True)
    assert not_ready.returncode == exits.NOT_FOUND
    assert "is not ready yet: the song is queued" in not_ready.stderr
    assert not (tmp_path / "vocals.mp3").exists() and not list(tmp_path.glob("*.part"))

    closed = msaas(rest, "queue", "--server", "http://127.0.0.1:9", text=True)
    assert closed.returncode == exits.SERVER
    assert closed.stderr.startswith("msaas: unreachable: cannot reach http://127.0.0.1:9")

    removed = msaas(rest, "rm", HUM_HASH, text=True)
    assert (removed.returncode, removed.stdout) == (exits.OK, "Song removed\n")
    # It was queued: removing it cancelled its job, and its status says so (exit 4, as for a failed song).
    cancelled = msaas(rest, "status", HUM_HASH, text=True)
    assert (cancelled.returncode, cancelled.stdout) == (exits.SONG_FAILED, "cancelled: cancelled by a client\n")
    assert msaas(rest, "queue", text=True).stdout.strip() == ""  # the queued job left the queue


def test_global_options_go_before_the_command_and_every_error_is_one_line(settings, rest, tmp_path):
    """As with kubectl, docker or gh; and no traceback, whatever the server, the arguments or the disk do."""
    queued = msaas(rest, "--json", "separate", "--no-wait", str(SHORT_SAMPLE), text=True)
    assert queued.returncode == exits.OK and json.loads(queued.stdout)["hash"] == HUM_HASH
    before = subprocess.run([str(MSAAS), "--server", f"http://{rest}", "-q", "queue"], capture_output=True, text=True)
    assert (before.returncode, before.stdout) == (exits.OK, f"{HUM_HASH}\n")

    html = ThreadingHTTPServer(("127.0.0.1", 0), NotAnApi)
    threading.Thread(target=html.serve_forever, daemon=True).start()
    try:
        cases = {
            "a server answering HTML": ([str(MSAAS), "--server", f"http://127.0.0.1:{html.server_port}", "queue"],
                                        exits.SERVER, "bad_answer"),
            "a malformed --server": ([str(MSAAS), "--server", "http://[::1", "queue"], exits.USAGE, "usage"),
            "a --server with a bad port": ([str(MSAAS), "--server", "http://h:99999", "queue"], exits.USAGE, "usage"),
            "a track with a slash": ([str(MSAAS), "--server", f"http://{rest}", "get", HUM_HASH, "../vocals"],
                                     exits.USAGE, "usage"),
        }
        for what, (command, code, error) in cases.items():
            ran = subprocess.run(command, capture_output=True, text=True, timeout=60)
            assert ran.returncode == code, (what, ran.stderr)
            assert ran.stderr.startswith(f"msaas: {error}: ") and ran.stderr.count("\n") == 1, (what, ran.stderr)
            assert "Traceback" not in ran.stderr
    finally:
        html.shutdown()
    get = subprocess.run([str(MSAAS), "--server", f"http://{rest}", "get", HUM_HASH, "vocals", "--out",
                          str(tmp_path / "no" / "such" / "folder" / "x.mp3")], capture_output=True, text=True)
    assert (get.returncode, get.stderr.count("\n")) == (exits.USAGE, 1), get.stderr  # an --out that cannot be made
    assert get.stderr.startswith("msaas: file_error: ") and "Traceback" not in get.stderr


class NotAnApi(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"<html>a proxy's login page</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_get_and_rm_tracks_of_a_separated_song(settings, rest, worker, tmp_path):
    songhash = msaas(rest, "separate", str(SHORT_SAMPLE), "--no-wait", text=True).stdout.strip()
    wait_for(lambda: json.loads(msaas(rest, "status", songhash, "--json", text=True).stdout)["state"] == "done",
             120, "the song to be separated")
    served = requests.get(f"http://{rest}/apiv1/track/{songhash}/vocals.mp3").content

    got = msaas(rest, "get", songhash, "vocals", "--out", str(tmp_path), text=True)
    assert got.returncode == exits.OK
    assert Path(got.stdout.strip()) == tmp_path / f"{songhash}-vocals.mp3"
    assert (tmp_path / f"{songhash}-vocals.mp3").read_bytes() == served
    piped = msaas(rest, "get", songhash, "vocals.mp3", "--out", "-")
    assert piped.stdout == served

    assert msaas(rest, "rm", songhash, "vocals", text=True).stdout == "Track removed\n"
    assert msaas(rest, "get", songhash, "vocals", cwd=tmp_path, text=True).returncode == exits.NOT_FOUND
    assert msaas(rest, "get", songhash, "drums", cwd=tmp_path, text=True).returncode == exits.OK


def test_a_failed_song_exits_4_with_its_reason(settings, rest, store, tmp_path):
    assert msaas(rest, "separate", str(SHORT_SAMPLE), "--no-wait", text=True).returncode == exits.OK
    store.remove_input(HUM_HASH)  # lost before any worker sees it
    worker = start_service("worker", settings, tmp_path / "worker.log", MAX_ATTEMPTS="1", WORKER_METRICS_PORT="0")
    try:
        wait_for(lambda: msaas(rest, "status", HUM_HASH, text=True).returncode == exits.SONG_FAILED, 60, "failure")
    finally:
        worker.stop()
    status = msaas(rest, "status", HUM_HASH, text=True)
    assert status.stdout.startswith(f"failed: the input queue/{HUM_HASH}.mp3 is missing")


# --- without a server ----------------------------------------------------------------------------------------


class FailingServer:
    """Answers like the API for a song that fails while `separate` waits for it."""

    def separate(self, song, options):
        return {"hash": HUM_HASH, "reason": "Song enqueued for separation"}

    def status(self, songhash, options):
        return {"hash": songhash, "state": "failed", "reason": "demucs exited with code 1: boom"}

    def watch(self, songhash, options, interval, timeout):
        yield self.status(songhash, options)


def test_separate_of_a_song_that_fails_raises_song_failed():
    args = argparse.Namespace(
        song=str(SHORT_SAMPLE), no_wait=False, quiet=True, json=False, out=None, timeout=None, interval=0,
        **{spec.name: None for spec in SPECS},
    )
    with pytest.raises(Failure) as failure:
        commands.separate(args, FailingServer())
    assert (failure.value.code, failure.value.exit_code) == ("song_failed", exits.SONG_FAILED)
    assert failure.value.message == f"song {HUM_HASH} failed: demucs exited with code 1: boom"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_plain_lines_step_by_ten_percent_and_the_bar_redraws():
    plain = io.StringIO()
    progress = Progress(plain, "song.mp3")
    queued = [{"state": "queued", "position": position} for position in (2, 2, 1)]
    processing = [{"state": "processing", "progress": percent} for percent in range(0, 101, 3)]
    for status in [*queued, *processing, {"state": "done"}]:
        progress.update(status)
    lines = plain.getvalue().splitlines()
    assert lines[:3] == ["song.mp3: queued, position 2", "song.mp3: queued, position 1", "song.mp3: processing 0%"]
    assert lines[3:6] == ["song.mp3: processing 12%", "song.mp3: processing 21%", "song.mp3: processing 30%"]
    assert lines[-1] == "song.mp3: done" and len(lines) == 13

    terminal = Terminal()
    progress = Progress(terminal, "song.mp3")
    progress.update({"state": "processing", "progress": 50})
    progress.note("done")
    assert terminal.getvalue() == (
        "\r\x1b[Ksong.mp3 [" + "#" * 15 + "-" * 15 + "]  50% processing 50%\nsong.mp3: done\n"
    )
