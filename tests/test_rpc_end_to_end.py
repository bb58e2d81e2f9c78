"""A song through the gRPC API end to end, with a real worker running Demucs' tiny model: uploaded in chunks,
watched to done, its tracks streamed and byte-identical to what REST serves; and the `msaas` command over gRPC."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
import requests as http

from msaas.models import FOUR_STEMS
from msaas.v1 import separation_pb2 as pb
from rpc_support import requests, stub
from support import ROOT, SHORT_SAMPLE

pytestmark = pytest.mark.demucs

MP3 = SHORT_SAMPLE.read_bytes()
SONGHASH = hashlib.sha224(MP3).hexdigest()
ORDER = [pb.SongStatus.STATE_QUEUED, pb.SongStatus.STATE_PROCESSING, pb.SongStatus.STATE_DONE]


def test_a_song_uploaded_in_chunks_is_watched_to_done_and_its_tracks_stream_as_rest_serves_them(rpc, rest, worker):
    service = stub(rpc)
    answer = service.Submit(requests(MP3, chunk=64 * 1024))
    assert (answer.songhash, answer.queued) == (SONGHASH, True)
    changes = list(service.WatchStatus(pb.StatusRequest(songhash=SONGHASH), timeout=240))
    states = [change.state for change in changes]
    assert states == sorted(states, key=ORDER.index), states  # queued, then processing, then done: in order
    assert states[-1] == pb.SongStatus.STATE_DONE and states.count(pb.SongStatus.STATE_DONE) == 1
    progress = [change.progress for change in changes if change.state == pb.SongStatus.STATE_PROCESSING]
    assert progress and progress == sorted(progress)
    assert all(earlier != later for earlier, later in zip(changes, changes[1:], strict=False))  # only changes
    done = changes[-1]
    assert sorted(done.tracks) == sorted(FOUR_STEMS) and done.progress == 100
    assert {"queued", "processing", "done"} <= set(done.timestamps)

    for track in done.tracks:
        parts = list(service.DownloadTrack(pb.TrackRequest(songhash=SONGHASH, track=track)))
        body = b"".join(part.chunk for part in parts[1:])
        assert parts[0].info.size == len(body) > 0
        served = http.get(f"http://{rest}/apiv1/track/{SONGHASH}/{track}.mp3", timeout=30)
        assert served.status_code == 200 and served.content == body, track

    again = service.Submit(requests(MP3))
    rest_again = http.post(f"http://{rest}/apiv1/separate", data=MP3, headers={"Content-Type": "audio/mpeg"},
                           timeout=30).json()
    assert not again.queued and again.reason == rest_again["reason"]
    assert "already separated" in again.reason


def test_the_cli_separates_over_grpc_with_progress_from_the_watch(rpc, worker, tmp_path):
    # `python -m msaas.cli` from this checkout (the console script may belong to another editable install).
    done = subprocess.run(
        [sys.executable, "-m", "msaas.cli", "--server", f"grpc://{rpc}", "separate", str(SHORT_SAMPLE),
         "--two-stems", "vocals", "--out", str(tmp_path / "stems")],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, done.stderr
    saved = sorted(done.stdout.split())
    assert saved == [str(tmp_path / "stems" / name) for name in ("no_vocals.mp3", "vocals.mp3")]
    lines = done.stderr.splitlines()
    assert lines[0] == f"short-hum.mp3: Song enqueued for separation (songhash {SONGHASH})"
    assert any(line.startswith("short-hum.mp3: processing ") for line in lines), lines
    assert lines[-1] == f"short-hum.mp3: done: 2 tracks in {tmp_path / 'stems'}"
    options = pb.Options(two_stems="vocals")
    vocals = list(stub(rpc).DownloadTrack(pb.TrackRequest(songhash=SONGHASH, track="vocals", options=options)))
    assert b"".join(part.chunk for part in vocals[1:]) == (tmp_path / "stems" / "vocals.mp3").read_bytes()

    status = subprocess.run(
        [sys.executable, "-m", "msaas.cli", "--server", f"grpc://{rpc}", "--json", "status", SONGHASH,
         "--two-stems", "vocals"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert status.returncode == 0, status.stderr
    assert '"state": "done"' in status.stdout


def test_the_python_example_of_the_api_docs_runs(rpc, worker, tmp_path):
    """docs/api.md's gRPC example, as written: a client's first program must work."""
    api = (ROOT / "docs" / "api.md").read_text()
    section = api[api.index("## gRPC"):]
    example = section[section.index("```python\n") + len("```python\n"):section.index("\n```\n")]
    example = example.replace("localhost:50051", rpc).replace('"data/short-hum.mp3"', repr(str(SHORT_SAMPLE)))
    (tmp_path / "example.py").write_text(example)
    ran = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=240,
                         check=False, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0] == f"{SONGHASH} Song enqueued for separation"
    assert lines[-1].startswith("STATE_DONE ") and any(line.startswith("STATE_PROCESSING") for line in lines)
    assert sorted(path.name for path in tmp_path.glob("*.mp3")) == ["no_vocals.mp3", "vocals.mp3"]
