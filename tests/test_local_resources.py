"""A full scratch disk is this machine's trouble, said as such: the worker counts the attempt (then fails the
job with the reason) and goes on to the next job; REST answers 503 with Retry-After. The disk is really
full: a 16 MiB tmpfs mounted as WORK_DIR and filled up (the tests run as root, as `make test` does in CI)."""

from __future__ import annotations

import base64
import errno
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from test_chunks import song as long_song
from test_faults import submit_batch, variant

from rest import create_app
from support import Statuses, serve, start_service, wait_for


@contextmanager
def tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `mount_point` for the block."""
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs to fill (this test needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    # Room for an 8 s song's separation (Demucs' float stems: 11 MB) once the filler is gone.
    with tmpfs(tmp_path / "small", "16m") as mount_point:
        yield mount_point


@pytest.fixture
def full_disk(small_disk) -> Path:
    """The small tmpfs with not one byte free."""
    with open(small_disk / "filler", "wb") as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return small_disk


def test_a_worker_on_a_full_disk_fails_the_job_with_the_reason_and_takes_the_next(settings, full_disk, tmp_path):
    settings = replace(settings, max_attempts=2)
    address, server = serve(create_app(settings))  # REST's own scratch space is fine
    worker = start_service("worker", settings, tmp_path / "worker.log", WORK_DIR=str(full_disk))
    status = Statuses(settings)
    try:
        [songhash] = submit_batch(address, 1, "full")
        wait_for(lambda: status.get(songhash).get("state") == "failed", 60, "the job to fail")
        assert status.get(songhash)["reason"] == f"no space left on device in WORK_DIR {full_disk}"
        assert status.get(songhash)["attempts"] == "2"
        # Space again: the worker was not wedged, the next job is separated.
        (full_disk / "filler").unlink()
        [following] = submit_batch(address, 1, "after")
        wait_for(lambda: status.get(following).get("state") == "done", 90, "the next job")
    finally:
        worker.stop()
        server.shutdown()


@pytest.mark.parametrize(
    ("seconds", "size"),
    [
        # 100 s of song (2.4 MB) fits in 8 MiB; decoded whole to float before it is cut in chunks (35 MB), not
        # (CHUNK_SECONDS below cuts it in chunks; it would fit the memory budget whole).
        (100, "8m"),
        # 8 s of song (190 kB) fits in 400 KiB; Demucs' four tracks of it do not.
        (8, "400k"),
    ],
    ids=["decoding-for-chunks", "demucs-writing-tracks"],
)
def test_a_disk_that_fills_up_during_the_separation_is_named(settings, tmp_path, seconds, size):
    song = long_song(seconds, tmp_path / "song.mp3")
    settings = replace(settings, max_attempts=1)
    address, server = serve(create_app(settings))
    status = Statuses(settings)
    with tmpfs(tmp_path / "small", size) as small_disk:
        worker = start_service("worker", settings, tmp_path / "worker.log", WORK_DIR=str(small_disk),
                               CHUNK_SECONDS="60")
        try:
            answer = requests.post(f"http://{address}/apiv1/separate", data=song.read_bytes(),
                                   headers={"Content-Type": "audio/mpeg"})
            songhash = answer.json()["hash"]
            wait_for(lambda: status.get(songhash).get("state") == "failed", 60, "the job to fail")
        finally:
            worker.stop()
            server.shutdown()
    assert status.get(songhash)["reason"] == f"no space left on device in WORK_DIR {small_disk}"


@pytest.mark.parametrize("how", ["raw", "json"])
def test_rest_on_a_full_disk_answers_503_with_retry_after(settings, full_disk, how):
    address, server = serve(create_app(replace(settings, work_dir=full_disk)))
    song = variant("rest-full")
    try:
        if how == "raw":
            answer = requests.post(f"http://{address}/apiv1/separate", data=song,
                                   headers={"Content-Type": "audio/mpeg"})
        else:
            answer = requests.post(f"http://{address}/apiv1/separate", json={"mp3": base64.b64encode(song).decode()})
    finally:
        server.shutdown()
    assert answer.status_code == 503
    assert answer.headers["Retry-After"]
    assert answer.json() == {
        "error": "local_resource_unavailable",
        "message": f"no space left on device in WORK_DIR {full_disk}",
    }
