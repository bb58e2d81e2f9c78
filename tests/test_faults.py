"""Fault injection against real processes: every accepted song ends with 4 stems or failed-with-a-reason.

Workers are killed mid-separation, stopped with SIGTERM, Redis is killed and restarted, the S3 server is
frozen, poison jobs are queued and jobs are delivered twice. Sizes can be raised for a soak run by hand:
`FAULT_SONGS=30 FAULT_KILLS=15 .venv/bin/python -m pytest -s tests/test_faults.py`.
"""

from __future__ import annotations

import base64
import os
import signal
import struct
import time
from dataclasses import replace

import pytest
import requests

from devstack.processes import Child, free_port, redis_command
from msaas.connections import connect_redis
from msaas.jobqueue import JobQueue
from msaas.jobs import Callback
from msaas.models import FOUR_STEMS
from msaas.naming import songhash_of
from msaas.options import Options
from rest import create_app
from support import SHORT_SAMPLE, Statuses, job_for, processes, serve, start_service

pytestmark = pytest.mark.demucs

SONG = SHORT_SAMPLE.read_bytes()
SONGS = int(os.environ.get("FAULT_SONGS", "5"))
KILLS = int(os.environ.get("FAULT_KILLS", "3"))
LEASE = 3.0  # seconds; the requeue bound is one lease plus one heartbeat (lease / 3)


def variant(label: str) -> bytes:
    """The sample with an ID3 title: the same audio under a different songhash."""
    text = b"\x00" + label.encode()  # encoding byte, then the title
    frame = b"TIT2" + struct.pack(">I", len(text)) + b"\x00\x00" + text
    size = len(frame)
    syncsafe = bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0))
    return b"ID3\x03\x00\x00" + syncsafe + frame + SONG


def submit_batch(rest: str, count: int, prefix: str, **options: object) -> list[str]:
    hashes = []
    for index in range(count):
        mp3 = variant(f"{prefix}-{index}")
        answer = requests.post(f"http://{rest}/apiv1/separate",
                               json={"mp3": base64.b64encode(mp3).decode(), **options})
        assert answer.status_code == 200, answer.text
        hashes.append(answer.json()["hash"])
    return hashes


def outcome(settings, store, result: str) -> str:
    """'done' (all four stems stored), 'failed' (with a reason) or 'pending'; `result` is a songhash, or
    songhash/tag for a song separated with other options than the defaults."""
    state = Statuses(settings).get(result)
    if state.get("state") == "failed" and state.get("reason"):
        return "failed"
    if state.get("state") != "done":
        return "pending"
    songhash, _, tag = result.partition("/")
    published = f"{songhash}/{tag or 'default'}/{state['published']}/"
    names = {item.object_name for item in store.client.list_objects(settings.output_bucket, prefix=published)}
    stored = {f"{published}{track}.{kind}" for track in FOUR_STEMS for kind in ("mp3", "waveform.json")}
    return "done" if names == stored else "pending"


def wait_all(settings, store, hashes: list[str], timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcomes = {songhash: outcome(settings, store, songhash) for songhash in hashes}
        if "pending" not in outcomes.values():
            return outcomes
        time.sleep(0.5)
    raise AssertionError(f"lost jobs: {[h for h, o in outcomes.items() if o == 'pending']}")


def held(connection, settings) -> int:
    """Jobs a worker holds (taken, not yet acknowledged or put back)."""
    return JobQueue(connection, settings.worker_queue, settings.demucs_model).depths()["taken"]


def wait_for_processing_by(settings, child: Child, timeout: float = 60) -> str:
    """The songhash `child` is separating, once its Demucs subprocess has had a moment to start."""
    connection = connect_redis(settings)
    worker_prefix = f"test-{child.process.pid}-"  # then a suffix of its own start
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for key in connection.scan_iter(match="status:*"):
            fields = connection.hgetall(key)
            if fields.get("state") == "processing" and fields.get("worker", "").startswith(worker_prefix):
                time.sleep(1.0)  # Demucs is running now: this is mid-separation
                return key.removeprefix("status:")
        time.sleep(0.1)
    raise AssertionError(f"worker {worker_prefix}... took no job within {timeout} s")


@pytest.fixture
def fault_settings(settings):
    return replace(settings, lease_seconds=LEASE, max_attempts=3 + KILLS)


def start_worker(settings, tmp_path, label: str, **overrides: str) -> Child:
    return start_service("worker", settings, tmp_path / f"worker-{label}.log", **overrides)


def test_sigkill_mid_separation_loses_nothing(fault_settings, store, tmp_path):
    settings = fault_settings
    address, server = serve(create_app(settings))
    steady = start_worker(settings, tmp_path, "steady")
    victim = start_worker(settings, tmp_path, "victim-0")
    connection = connect_redis(settings)
    delays = []
    try:
        hashes = submit_batch(address, SONGS, "kill")
        for kill in range(KILLS):
            songhash = wait_for_processing_by(settings, victim)
            victim_name = connection.hget(f"status:{songhash}", "worker")
            victim.signal(signal.SIGKILL)
            killed_at = time.monotonic()
            victim.process.wait()
            victim = start_worker(settings, tmp_path, f"victim-{kill + 1}")  # as Kubernetes would
            while connection.hget(f"status:{songhash}", "worker") == victim_name:
                assert time.monotonic() - killed_at < 60, "abandoned job not requeued within 60 s"
                time.sleep(0.05)
            delays.append(time.monotonic() - killed_at)
        outcomes = wait_all(settings, store, hashes, 120 + 10 * SONGS)
    finally:
        victim.stop()
        steady.stop()
        server.shutdown()
    print(f"\nsubmitted {len(hashes)}, kills {KILLS}, requeue delays {[round(d, 1) for d in delays]} s")
    assert list(outcomes.values()) == ["done"] * len(hashes)
    assert max(delays) <= LEASE + LEASE / 3 + 1.0  # the stated bound, plus polling slack
    assert JobQueue(connection, settings.worker_queue, settings.demucs_model).depths() == {
        "waiting": 0, "delayed": 0, "taken": 0, "dead": 0}


@pytest.mark.parametrize(("grace", "ends"), [("60", "finished"), ("0.5", "handed back")])
def test_sigterm_mid_job_finishes_or_hands_back(fault_settings, store, tmp_path, grace, ends):
    settings = fault_settings
    address, server = serve(create_app(settings))
    worker = start_worker(settings, tmp_path, "first", SHUTDOWN_GRACE=grace)
    connection = connect_redis(settings)
    try:
        # To hand back, three passes of Demucs: it still runs well past the short grace (one pass of the tiny model
        # on the 8 s sample can end within it, and then the job is rightly finished, not handed back).
        options = {"shifts": 1 if ends == "finished" else 3}
        hashes = submit_batch(address, 2, f"term-{grace}", **options)
        results = [Options.resolve(options, settings.demucs_model).result(songhash, settings.demucs_model).id
                   for songhash in hashes]
        result = wait_for_processing_by(settings, worker)
        songhash = result.partition("/")[0]
        worker.signal(signal.SIGTERM)
        assert worker.process.wait(90) == 0
        assert held(connection, settings) == 0  # nothing orphaned by a clean shutdown
        log = (tmp_path / "worker-first.log").read_text()
        if ends == "finished":
            assert outcome(settings, store, result) == "done"
        else:
            assert f"job {songhash} handed back unfinished" in log
            assert outcome(settings, store, result) == "pending"
        worker = start_worker(settings, tmp_path, "second")
        outcomes = wait_all(settings, store, results, 120)
    finally:
        worker.stop()
        server.shutdown()
    assert list(outcomes.values()) == ["done"] * 2


def test_redis_killed_and_restarted_after_enqueueing_loses_nothing(settings, store, tmp_path):
    folder = tmp_path / "redis-data"
    folder.mkdir()
    port = free_port()

    def redis_server() -> Child:
        child = Child("redis", redis_command(port, folder), log_path=folder / "redis.log", port=port)
        child.start()
        child.wait_ready()
        return child

    redis = redis_server()
    settings = replace(settings, redis_port=port, lease_seconds=LEASE)
    address, server = serve(create_app(settings))
    workers = [start_worker(settings, tmp_path, f"r{index}") for index in range(2)]
    logs = start_service("logs", settings, tmp_path / "logs.out")
    try:
        hashes = submit_batch(address, SONGS, "redis")
        redis.signal(signal.SIGKILL)  # right after enqueueing: no clean shutdown, no final save
        redis.process.wait()
        time.sleep(2)
        redis = redis_server()  # same port, same append-only file
        outcomes = wait_all(settings, store, hashes, 180 + 10 * SONGS)
        assert held(connect_redis(settings), settings) == 0
        time.sleep(1)
    finally:
        for worker in workers:
            worker.stop()
        logs.stop()
        server.shutdown()
        redis.stop()
    assert list(outcomes.values()) == ["done"] * len(hashes)
    # The logs service reconnected: it printed the workers' lines from after the restart.
    printed = (tmp_path / "logs.out").read_text()
    assert f"job {hashes[-1]} separated in" in printed


def test_frozen_s3_server_for_ten_seconds_loses_nothing(fault_settings, s3_server, store, tmp_path):
    settings = fault_settings
    address, server = serve(create_app(settings))
    workers = [start_worker(settings, tmp_path, f"s{index}") for index in range(2)]
    try:
        hashes = submit_batch(address, SONGS, "s3")
        wait_for_processing_by(settings, workers[0])
        s3_server.signal(signal.SIGSTOP)  # unreachable, objects kept: killing it would lose them instead
        try:
            time.sleep(10)
        finally:
            s3_server.signal(signal.SIGCONT)
        outcomes = wait_all(settings, store, hashes, 180)
    finally:
        for worker in workers:
            worker.stop()
        server.shutdown()
    assert list(outcomes.values()) == ["done"] * len(hashes)


def test_poison_jobs_are_dead_lettered_and_the_rest_completes(settings, store, tmp_path):
    settings = replace(settings, lease_seconds=LEASE)
    address, server = serve(create_app(settings))
    connection = connect_redis(settings)
    queue = JobQueue(connection, settings.worker_queue, settings.demucs_model)
    # A valid frame header, then noise: it passes for an MP3 at a glance and does not decode.
    undecodable = SONG[:1254] + os.urandom(100_000)
    poison = tmp_path / "poison.mp3"
    poison.write_bytes(undecodable)
    store.put_input(songhash_of(undecodable), str(poison))
    queue.push(job_for(songhash_of(undecodable), settings))
    missing = songhash_of(b"never uploaded")
    queue.push(job_for(missing, settings))
    workers = [start_worker(settings, tmp_path, f"p{index}") for index in range(2)]
    try:
        good = submit_batch(address, 3, "poison")
        outcomes = wait_all(settings, store, [*good, songhash_of(undecodable), missing], 240)
        # The failure reaches users too, in the 404 of a track they ask for.
        answer = requests.get(f"http://{address}/apiv1/track/{missing}/vocals.mp3")
        assert answer.status_code == 404
        assert "separation failed: the input" in answer.json()["message"]
    finally:
        for worker in workers:
            worker.stop()
        server.shutdown()
    assert [outcomes[songhash] for songhash in good] == ["done"] * 3
    status = Statuses(settings)
    assert status.get(songhash_of(undecodable))["attempts"] == str(settings.max_attempts)
    # Decoded by the worker as the door would have (the job was pushed by hand): mostly frames that do not decode.
    assert "does not decode" in status.get(songhash_of(undecodable))["reason"]
    assert "is missing" in status.get(missing)["reason"]
    dead = {queue.decode(letter.job).songhash: letter.reason for letter in queue.dead_letters()}
    assert set(dead) == {songhash_of(undecodable), missing}
    assert "does not decode" in dead[songhash_of(undecodable)]


def test_separation_past_its_time_limit_is_killed_and_fails_with_the_reason(settings, store, tmp_path):
    settings = replace(settings, demucs_timeout_min=0.5, demucs_timeout_factor=0.0, max_attempts=2)
    address, server = serve(create_app(settings))
    worker = start_worker(settings, tmp_path, "slow")
    try:
        [songhash] = submit_batch(address, 1, "timeout")
        assert wait_all(settings, store, [songhash], 60) == {songhash: "failed"}
    finally:
        worker.stop()
        server.shutdown()
    state = Statuses(settings).get(songhash)
    assert state["reason"] == "demucs timed out after 0 s and was killed"
    assert state["attempts"] == "2"
    # Its whole process group went: no Demucs is left running for this song.
    commands = [command for _, command in processes().values()]
    assert [command for command in commands if "demucs.separate" in command and songhash in command] == []


def test_a_job_delivered_twice_gives_one_set_of_outputs_and_one_result(
    settings, store, tmp_path, callback_receiver
):
    settings = replace(settings, lease_seconds=LEASE)
    connection = connect_redis(settings)
    store.put_input(songhash_of(SONG), str(SHORT_SAMPLE))
    job = job_for(songhash_of(SONG), settings, Callback(callback_receiver.url, {"n": 1}))
    raw = job.to_json()
    connection.lpush(settings.worker_queue, raw, raw)  # the same job, twice (as after a recovery)
    workers = [start_worker(settings, tmp_path, f"d{index}") for index in range(2)]
    try:
        outcomes = wait_all(settings, store, [job.songhash], 120)
        deadline = time.monotonic() + 30
        # The callback is delivered after "done", by the worker's delivery threads.
        while (any(JobQueue(connection, settings.worker_queue, settings.demucs_model).depths().values())
               or connection.hget(f"claim:open:{job.songhash}", "callback_state") != "delivered"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        for worker in workers:
            worker.stop()
    assert outcomes == {job.songhash: "done"}
    names = sorted(item.object_name for item in store.client.list_objects(settings.output_bucket, recursive=True))
    published = connection.hget(f"status:{job.songhash}", "published")
    assert names == sorted(f"{job.songhash}/default/{published}/{track}.{kind}" for track in FOUR_STEMS
                           for kind in ("mp3", "waveform.json"))
    assert len(callback_receiver.received) == 1
    assert callback_receiver.received[0]["headers"]["X-Event-Id"] == job.id
