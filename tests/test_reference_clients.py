"""The sample clients, unmodified, against the running stack: they submit, list, wait and save stems."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
import sphn

from support import ROOT

pytestmark = pytest.mark.demucs


def test_short_sample_requests_separates_the_short_samples(settings, rest, worker, tmp_path):
    (tmp_path / "data").mkdir()
    shorts = sorted((ROOT / "data").glob("short-*.mp3"))
    assert len(shorts) >= 2
    for mp3 in shorts:
        shutil.copy(mp3, tmp_path / "data")
    (tmp_path / "data" / "song-long.mp3").write_bytes(b"not posted by the short script")

    run = subprocess.run(
        [sys.executable, str(ROOT / "short-sample-requests.py")],
        cwd=tmp_path, env={"REST": rest, "WAIT": "300", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=400,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    hashes = re.findall(r'"hash": "([0-9a-f]{56})"', run.stdout)
    assert len(hashes) == len(shorts)
    assert run.stdout.count('"reason": "Song enqueued for separation"') == len(shorts)
    assert run.stdout.count("Cache from server is") == len(shorts)
    assert '"queue": [' in run.stdout
    for songhash in hashes:
        assert f"Callback received for {songhash}" in run.stdout
        for track in ("vocals", "drums", "bass", "other"):
            saved = tmp_path / "output" / songhash / f"{track}.mp3"
            assert f"Saved output/{songhash}/{track}.mp3" in run.stdout
            audio, rate = sphn.read(str(saved))
            assert audio.shape[1] / rate > 7.5
