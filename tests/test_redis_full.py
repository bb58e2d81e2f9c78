"""Redis full (maxmemory with noeviction, as redis/redis.conf runs it: every write refused with OOM) under a worker
in the middle of a song: an outage like any other, not a failed attempt and not a reason to exit. Real worker, and a
Redis of this test's own (the session's is never filled)."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest
import requests

from msaas.connections import connect_redis
from msaas.models import FOUR_STEMS
from msaas.naming import songhash_of
from rest import create_app
from support import SHORT_SAMPLE, serve, start_service, wait_for

pytestmark = pytest.mark.demucs
SONG = SHORT_SAMPLE.read_bytes()
SONGHASH = songhash_of(SONG)
SLOW = {"shifts": 4}  # the tiny model's 8 s made long enough to fill Redis while it runs
FULL = "used memory > 'maxmemory'"  # what Redis answers every write


def test_a_worker_outlives_a_full_redis_and_then_finishes_the_song(settings, own_redis, tmp_path):
    """Redis full when the worker takes the song (its start refused), and again when it publishes the tracks: each
    time the worker hands the song back uncounted and waits, and once Redis has room the song is done, in its first
    counted attempt. (Before: the refused start ended the worker; a refused publish counted as a failed attempt,
    "internal error: server:ResponseError", and three made the song fail.)"""
    own = replace(settings, redis_port=own_redis.port)
    rest, server = serve(create_app(own))
    log = tmp_path / "worker.log"
    redis = connect_redis(own)
    worker = None
    try:
        requests.post(f"http://{rest}/apiv1/separate", json={"mp3": base64.b64encode(SONG).decode(), **SLOW})
        redis.config_set("maxmemory", 1)  # full: every write refused
        worker = start_service("worker", own, log)
        wait_for(lambda: _refusals(log) >= 3, 120, "the worker to meet a full Redis when it starts the song")
        assert worker.exit_code() is None, log.read_text()[-3000:]
        redis.config_set("maxmemory", 0)
        wait_for(lambda: _status(rest)["state"] == "processing", 120, "the song to be separated")
        redis.config_set("maxmemory", 1)
        before = _refusals(log)
        wait_for(lambda: "OOM" in _status(rest).get("reason", "") or _refusals(log) >= before + 3, 180,
                 "the worker to meet a full Redis when it publishes")
        assert worker.exit_code() is None, log.read_text()[-3000:]
        redis.config_set("maxmemory", 0)
        wait_for(lambda: _status(rest)["state"] == "done", 240, "the song, done once Redis has room")
        final = _status(rest)
        served = {track: requests.get(f"http://{rest}/apiv1/track/{SONGHASH}/{track}.mp3", params=SLOW).status_code
                  for track in FOUR_STEMS}
    finally:
        redis.config_set("maxmemory", 0)
        if worker is not None:
            worker.stop()
        server.shutdown()
    assert served == dict.fromkeys(FOUR_STEMS, 200)
    assert final["attempts"] == 1, final  # a full Redis is not the song's fault
    assert "internal error" not in log.read_text()


def _refusals(log) -> int:
    """The worker's waits on a full Redis: its loop backing off, or its heartbeat, refused."""
    return sum(FULL in line for line in log.read_text().splitlines() if "backend unavailable" in line)


def _status(rest: str) -> dict:
    return requests.get(f"http://{rest}/apiv1/status/{SONGHASH}", params=SLOW).json()
