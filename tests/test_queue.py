"""The reliable queue, the fair turns and the fenced status steps, against a real redis-server."""

from __future__ import annotations

import json
import time

from msaas.claims import Claims
from msaas.jobqueue import JobQueue
from msaas.jobs import Job
from msaas.options import Options
from msaas.records import DONE, PROCESSING, QUEUED, status_key
from msaas.reliable import ReliableQueue
from msaas.status import SongStatus
from support import job_for

SONG = "a" * 56


def songs(count: int, first: int = 0) -> list[str]:
    return [f"{index:056x}" for index in range(first, first + count)]


def job(settings, songhash: str, tenant: str = "open", seconds: float = 60.0, lane: str = "normal") -> Job:
    options = Options.resolve({}, settings.demucs_model)
    return Job(songhash, options, options.result(songhash, settings.demucs_model), seconds, tenant=tenant, lane=lane)


def test_a_taker_whose_lease_ran_out_can_no_longer_write_for_its_entry(redis_client):
    queue = ReliableQueue(redis_client, "q")
    queue.push("one", "body", order=1)
    stale = queue.take("paused-worker", 0.1)
    time.sleep(0.2)
    assert [(reaped.id, reaped.outcome) for reaped in queue.reap(max_attempts=3)] == [("one", "requeued")]
    fresh = queue.take("other-worker", 30)
    assert fresh.id == "one" and int(fresh.token) > int(stale.token) and fresh.attempts == 1
    # The paused worker wakes: none of its steps counts any more, and the entry stays the other worker's.
    assert not queue.renew(stale, 30) and not queue.ack(stale) and not queue.release(stale) and not queue.holds(stale)
    assert not queue.bury(stale, "stale") and queue.holds(fresh)
    assert queue.ack(fresh) and queue.counts() == {"lane:default": 0, "delayed": 0, "taken": 0, "dead": 0}


def test_an_entry_reaped_too_often_goes_to_the_dead_letters(redis_client):
    queue = ReliableQueue(redis_client, "q")
    queue.push("one", "body", order=1)
    for _ in range(3):
        queue.take("dies", 0.01)
        time.sleep(0.05)
        reaped = queue.reap(max_attempts=3)
    assert [reaped.outcome for reaped in reaped] == ["dead"]
    assert queue.take("w", 30) is None and queue.counts()["dead"] == 1


def test_a_released_entry_waits_its_delay_then_keeps_its_place(redis_client):
    queue = ReliableQueue(redis_client, "q")
    for index, name in enumerate(("first", "second")):
        queue.push(name, "body", order=index)
    first = queue.take("w", 30)
    assert queue.release(first, delay=0.3)
    assert queue.take("w", 30).id == "second"
    assert queue.take("w", 30) is None
    time.sleep(0.35)
    again = queue.take("w", 30)
    assert again.id == "first" and again.attempts == 1


def test_the_same_job_pushed_twice_is_queued_once(redis_client, settings):
    queue = JobQueue(redis_client, settings.worker_queue, settings.demucs_model)
    raw = json.dumps({"hash": SONG})  # a script's job: no id, so its text names it
    redis_client.lpush(settings.worker_queue, raw, raw)
    queued = job(settings, "b" * 56)
    queue.push(queued)
    queue.push(queued)
    assert queue.depths()["waiting"] == 2
    assert {queue.take("w", 30).job.songhash for _ in range(2)} == {SONG, "b" * 56}
    assert queue.take("w", 30) is None


def test_positions_are_ranks_and_previews_go_first(redis_client, settings):
    queue = JobQueue(redis_client, settings.worker_queue, settings.demucs_model)
    jobs = [job(settings, songhash) for songhash in songs(50)]
    for queued in jobs:
        queue.push(queued)
    preview = job(settings, "c" * 56, lane="preview")
    queue.push(preview)
    assert queue.position(preview.id) == 1
    assert [queue.position(queued.id) for queued in jobs[:3]] == [2, 3, 4]
    assert queue.position(jobs[-1].id) == 51
    assert queue.take("w", 30).job.id == preview.id
    assert queue.position(jobs[0].id) == 1 and queue.position(preview.id) is None


def test_one_tenants_backlog_does_not_hold_back_anothers_song(redis_client, settings):
    queue = JobQueue(redis_client, settings.worker_queue, settings.demucs_model)
    for songhash in songs(100):
        queue.push(job(settings, songhash, tenant="alice"))
    for _ in range(2):  # two workers busy with alice's songs
        assert queue.take("w", 30).job.tenant == "alice"
    bob = job(settings, "d" * 56, tenant="bob")
    queue.push(bob)
    assert queue.position(bob.id) == 1
    assert queue.take("w", 30).job.id == bob.id


def test_backlogged_tenants_share_the_audio_by_their_weights(redis_client, settings):
    queue = JobQueue(redis_client, settings.worker_queue, settings.demucs_model)
    claims = Claims(redis_client, queue)
    for songhash in songs(200):
        claims.submit("heavy", job(settings, songhash, tenant="heavy", seconds=30.0), None, weight=3.0)
    for songhash in songs(100, first=500):
        claims.submit("light", job(settings, songhash, tenant="light", seconds=90.0), None, weight=1.0)
    separated = {"heavy": 0.0, "light": 0.0}
    for _ in range(120):
        taken = queue.take("w", 30).job
        separated[taken.tenant] += taken.seconds
    assert abs(separated["heavy"] / separated["light"] - 3.0) < 0.3, separated


def test_a_listing_cursor_stays_right_while_songs_are_taken(redis_client, settings):
    queue = JobQueue(redis_client, settings.worker_queue, settings.demucs_model)
    claims = Claims(redis_client, queue)
    hashes = songs(7)
    for songhash in hashes:
        claims.submit("open", job(settings, songhash), None)
    first = claims.active("open", None, 3)
    queue.take("w", 30)  # the first song leaves the queue meanwhile
    second = claims.active("open", (first[-1][1], first[-1][0]), 3)
    third = claims.active("open", (second[-1][1], second[-1][0]), 3)
    assert [result for result, _ in first + second + third] == hashes


def test_a_stale_attempt_cannot_publish_progress_or_fail_a_song_another_attempt_finished(redis_client, settings):
    """Issue 20, item 1: a worker paused past its lease must neither flap the progress nor undo the result."""
    queue = JobQueue(redis_client, settings.worker_queue, settings.demucs_model)
    claims = Claims(redis_client, queue)
    status = SongStatus(redis_client, queue, f"{settings.worker_queue}:callbacks")
    claims.submit("open", job_for(SONG, settings), None)
    paused = queue.take("paused", 0.1)
    assert status.start(paused, "paused").started and status.progress(paused, 17)
    time.sleep(0.2)
    assert [reaped.outcome for reaped in status.reap(3)] == ["requeued"]
    assert status.get(SONG)["state"] == QUEUED
    fresh = queue.take("fresh", 30)
    assert status.start(fresh, "fresh").started and status.progress(fresh, 33)
    assert not status.progress(paused, 17)
    assert status.get(SONG)["progress"] == "33"
    assert status.publish(fresh, "fresh", None, 8.0, 4.0)
    assert status.get(SONG)["state"] == DONE and status.get(SONG)["published"] == fresh.taken.token
    # The paused worker wakes and tries everything it could: nothing changes.
    assert not status.publish(paused, "paused", None, 8.0, 4.0)
    assert not status.fail(paused, "stale")
    assert not status.retry(paused, "stale", 0)
    assert status.get(SONG)["state"] == DONE and status.get(SONG)["published"] == fresh.taken.token
    assert claims.usage("open") == {"songs": 0.0, "audio_seconds": 8.0, "cpu_seconds": 4.0}


def test_a_second_delivery_of_a_done_job_is_dropped(redis_client, settings):
    queue = JobQueue(redis_client, settings.worker_queue, settings.demucs_model)
    claims = Claims(redis_client, queue)
    status = SongStatus(redis_client, queue, f"{settings.worker_queue}:callbacks")
    queued = job_for(SONG, settings)
    claims.submit("open", queued, None)
    first = queue.take("w", 30)
    status.start(first, "w")
    redis_client.lpush(settings.worker_queue, queued.to_json())  # pushed again by hand while it runs: ignored
    assert status.publish(first, "w", None, 8.0, 1.0)
    redis_client.lpush(settings.worker_queue, queued.to_json())  # and again once done: taken, then dropped
    again = queue.take("w", 30)
    assert again.job.id == queued.id and status.start(again, "w").outcome == DONE
    assert queue.depths() == {"waiting": 0, "delayed": 0, "taken": 0, "dead": 0}


def test_an_operator_can_requeue_or_purge_a_dead_job(redis_client, settings):
    queue = JobQueue(redis_client, settings.worker_queue, settings.demucs_model)
    claims = Claims(redis_client, queue)
    status = SongStatus(redis_client, queue, f"{settings.worker_queue}:callbacks")
    claims.submit("open", job_for(SONG, settings), None)
    delivery = queue.take("w", 30)
    status.start(delivery, "w")
    assert status.fail(delivery, "demucs exited with code 1: boom")
    [letter] = queue.dead_letters()
    assert (letter.reason, letter.attempts, letter.last_worker, letter.tenant) == (
        "demucs exited with code 1: boom", 1, "w", "open")  # its one attempt counted
    assert status.get(SONG)["state"] == "failed"
    assert status.revive(letter.id) == "revived"
    assert status.get(SONG)["state"] == QUEUED and queue.position(letter.id) == 1
    again = queue.take("w", 30)
    assert again.attempts == 0 and status.start(again, "w").started
    status.fail(again, "boom again")
    assert queue.purge(letter.id) and queue.dead_letters() == [] and status.revive(letter.id) == "missing"


def test_a_status_expires_only_when_done_asks_for_it(redis_client, settings):
    queue = JobQueue(redis_client, settings.worker_queue, settings.demucs_model)
    claims = Claims(redis_client, queue)
    status = SongStatus(redis_client, queue, f"{settings.worker_queue}:callbacks")
    claims.submit("open", job_for(SONG, settings), None)
    delivery = queue.take("w", 30)
    status.start(delivery, "w")
    assert redis_client.ttl(status_key(SONG)) == -1 and status.get(SONG)["state"] == PROCESSING
    status.publish(delivery, "w", 100, 8.0, 1.0)
    assert 90 < redis_client.ttl(status_key(SONG)) <= 100
    assert claims.forget_done(SONG) and status.get(SONG) == {}
