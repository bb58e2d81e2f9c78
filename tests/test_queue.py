"""The queue's Redis operations against a real redis-server: song locks and lease reaping."""

from __future__ import annotations

import time

from msaas.jobqueue import JobQueue
from msaas.status import DONE, PROCESSING, SongStatus
from support import job_for
from worker.loop import Worker

SONG = "a" * 56


def test_a_result_lock_is_only_renewed_or_released_by_its_holder(redis_client, settings):
    queue = JobQueue(redis_client, settings.worker_queue, settings.demucs_model)
    key = queue.result_lock_key(SONG)
    assert queue.lock_result(SONG, "worker-a", 30)
    assert queue.lock_result(SONG, "worker-a", 30)  # its holder may take it again
    assert not queue.lock_result(SONG, "worker-b", 30)

    queue.renew_result_lock(SONG, "worker-b", 300)
    assert redis_client.pttl(key) <= 30_000
    queue.unlock_result(SONG, "worker-b")
    assert redis_client.get(key) == "worker-a"

    queue.renew_result_lock(SONG, "worker-a", 300)
    assert redis_client.pttl(key) > 30_000
    queue.unlock_result(SONG, "worker-a")
    assert redis_client.get(key) is None
    assert queue.lock_result(SONG, "worker-b", 30)


def test_reaping_requeues_only_the_jobs_of_workers_without_a_lease(redis_client, settings):
    queue = JobQueue(redis_client, settings.worker_queue, settings.demucs_model)
    for song in ("b" * 56, "c" * 56):
        queue.push(job_for(song, settings))
    queue.renew_lease("alive", 30)
    assert queue.take("alive", 1).job.songhash == "b" * 56
    assert queue.take("dead", 1).job.songhash == "c" * 56  # "dead" never had a lease

    assert [(worker, job.songhash, job.attempts) for worker, job in queue.reap()] == [("dead", "c" * 56, 1)]
    assert redis_client.llen(queue.processing_list("alive")) == 1
    assert queue.waiting()[0].songhash == "c" * 56
    assert queue.reap() == []  # nothing twice


def test_a_worker_started_again_as_the_same_process_lets_its_predecessors_job_be_reaped(redis_client, store, settings):
    """A restarted container: same hostname, the worker pid 1 again. The new process must not renew the dead
    one's lease, or the job the dead one held is never requeued."""
    queue = JobQueue(redis_client, settings.worker_queue, settings.demucs_model)
    status = SongStatus(redis_client)
    dead = Worker(settings, queue, store, status)
    queue.push(job_for(SONG, settings))
    queue.renew_lease(dead.name, 0.2)
    assert queue.take(dead.name, 1).job.songhash == SONG  # then it is killed mid-job
    time.sleep(0.3)

    Worker(settings, queue, store, status).beat()  # its first heartbeat, as on start
    assert [job.songhash for job in queue.waiting()] == [SONG]
    assert redis_client.llen(queue.processing_list(dead.name)) == 0


def test_only_a_done_status_is_forgotten_when_its_tracks_are_gone(redis_client):
    status = SongStatus(redis_client)
    status.set("a", DONE)
    status.set("b", PROCESSING, worker="w")
    assert status.forget_done("a") and status.get("a") == {}
    assert not status.forget_done("b") and status.get("b")["state"] == PROCESSING
    assert not status.forget_done("never-seen")


def test_a_status_expires_only_in_the_state_that_asked_for_it(redis_client):
    status = SongStatus(redis_client)
    status.set("a", DONE, expire_in=100)
    assert 90 < redis_client.ttl(status.key("a")) <= 100
    status.set("a", PROCESSING, worker="w")  # separated again (a job pushed straight to the queue): no expiry
    assert redis_client.ttl(status.key("a")) == -1
