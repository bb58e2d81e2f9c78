"""The worker loop: take a job reliably, separate the song, store the tracks, call back, acknowledge.

Every failure of a job is counted: it is retried behind the other jobs until it has failed
`max_attempts` times, then it goes to the dead-letter list with its last error. A job interrupted by a
shutdown or an outage is handed back uncounted. A heartbeat thread keeps this worker's lease alive and
requeues the jobs of workers whose lease expired.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from msaas.backoff import Backoff
from msaas.errors import BackendUnavailable, NotFound
from msaas.jobqueue import Delivery, JobQueue
from msaas.jobs import Job, Options, result_id
from msaas.settings import Settings
from msaas.status import DONE, FAILED, PROCESSING, QUEUED, SongStatus
from msaas.storage import ObjectStore
from worker.callback import deliver
from worker.demucs_run import Abandoned, DemucsRun, SeparationFailed, separate
from worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)
TAKE_TIMEOUT = 5.0  # seconds a BLMOVE waits, so a stop request is noticed that quickly
BUSY_SONG_PAUSE = 1.0  # after putting back a song another worker is writing
ALIVE_FILE = Path(tempfile.gettempdir()) / "msaas-worker-alive"
DONE_MARGIN = 3600  # seconds by which a "done" status expires before its tracks (clocks differ; stores round)


@dataclass(frozen=True)
class Task:
    """A job with its options settled against this worker's default model, and the result it makes."""

    job: Job
    options: Options
    result: str

    @classmethod
    def of(cls, job: Job, default_model: str) -> Task:
        options = job.options.normalized(default_model)
        return cls(job, options, result_id(job.songhash, options))


class Worker:
    def __init__(
        self, settings: Settings, queue: JobQueue, store: ObjectStore, status: SongStatus,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or WorkerMetrics()
        self.queue = queue
        self.store = store
        self.status = status
        self.name = f"{settings.hostname}-{os.getpid()}"  # unique even with several workers on a host
        self.stop_requested_at: float | None = None
        self.current: str | None = None  # the result being written, whose lock the heartbeat renews

    def request_stop(self, signum: int, _frame: object = None) -> None:
        if self.stop_requested_at is None:
            log.info("worker %s: got signal %s, taking no more jobs", self.name, signum)
            self.stop_requested_at = time.monotonic()

    def should_abandon(self) -> bool:
        """True once a stop was requested and the current job has outlasted the grace period."""
        stop = self.stop_requested_at
        return stop is not None and time.monotonic() - stop > self.settings.shutdown_grace

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        log.info(
            "worker %s: taking jobs from %s (model %s on %s)",
            self.name, self.queue.name, self.settings.demucs_model, self.settings.demucs_device,
        )
        stopped = threading.Event()
        heartbeat = threading.Thread(target=self.heartbeat, args=(stopped,), name="heartbeat", daemon=True)
        backoff = Backoff()
        try:
            self.beat()
            self.check_store()
            heartbeat.start()
            while self.stop_requested_at is None:
                try:
                    if backoff.failures:
                        self.recover_own_jobs()
                    delivery = self.queue.take(self.name, TAKE_TIMEOUT)
                    backoff.reset()
                    if delivery is not None:
                        self.handle(delivery)
                except (redis.ConnectionError, redis.TimeoutError, BackendUnavailable) as error:
                    delay = backoff.next_delay()
                    log.warning("worker %s: backend unavailable (%s); retrying in %.1f s", self.name, error, delay)
                    time.sleep(delay)
        finally:
            stopped.set()
            try:
                self.queue.drop_lease(self.name)
            except redis.RedisError:
                pass  # the lease expires by itself
            log.info("worker %s: stopped", self.name)

    def check_store(self) -> None:
        """Say at start-up, not at the first job, when the object store is away or refuses our keys."""
        try:
            self.store.ensure_buckets()
        except BackendUnavailable as error:
            log.error("worker %s: %s", self.name, error.message)

    def recover_own_jobs(self) -> None:
        """After an outage cut a job short, hand back whatever is left in this worker's processing list."""
        for job in self.queue.hand_back_all(self.name):
            log.warning("worker %s: handed back job %s interrupted by an outage", self.name, job)

    def heartbeat(self, stopped: threading.Event) -> None:
        while not stopped.wait(self.settings.lease_seconds / 3):
            self.beat()

    def beat(self) -> None:
        """Renew this worker's lease (and its song lock), and requeue the jobs of workers that died."""
        ALIVE_FILE.touch()  # for the liveness probe: the heartbeat runs, whatever Redis is doing
        try:
            self.queue.renew_lease(self.name, self.settings.lease_seconds)
            current = self.current
            if current is not None:
                self.queue.renew_song_lock(current, self.name, self.settings.lease_seconds)
            for dead_worker, job in self.queue.reap():
                self.metrics.jobs_retried.labels("worker_lost").inc()
                log.warning(
                    "worker %s: requeued job %s of %s, whose lease expired",
                    self.name, job.songhash if job else "(unreadable)", dead_worker,
                )
        except redis.RedisError as error:
            log.warning("worker %s: heartbeat failed: %s", self.name, error)

    def handle(self, delivery: Delivery) -> None:
        job = delivery.job
        if job is None:
            log.error("worker %s: unreadable job set aside: %s", self.name, delivery.error)
            self.queue.bury(self.name, delivery, delivery.error or "unreadable job")
            self.metrics.jobs_dead_lettered.inc()
            return
        task = Task.of(job, self.settings.demucs_model)
        if not self.queue.lock_song(task.result, self.name, self.settings.lease_seconds):
            log.info("worker %s: song %s is being written by another worker; later", self.name, job.songhash)
            self.queue.postpone(self.name, delivery)
            time.sleep(BUSY_SONG_PAUSE)
            return
        self.current = task.result
        try:
            self.attempt(delivery, task)
        finally:
            self.current = None
            self.queue.unlock_song(task.result, self.name)

    def attempt(self, delivery: Delivery, task: Task) -> None:
        job = task.job
        status = self.status.get(task.result)
        if status.get("state") == DONE and status.get("job_id") == job.id:
            log.info("worker %s: job %s was already done (a repeated delivery); dropped", self.name, job.songhash)
            self.queue.ack(self.name, delivery)
            return
        attempt = job.attempts + 1
        self.status.set(task.result, PROCESSING, worker=self.name, job_id=job.id, attempts=attempt, progress=0)
        try:
            self.process(task)
        except Abandoned:
            log.warning("worker %s: job %s handed back unfinished (shutting down)", self.name, job.songhash)
            self.queue.hand_back(self.name, delivery)
            self.status.set(task.result, QUEUED, reason="handed back by a worker that shut down", job_id=job.id)
            return
        except BackendUnavailable as error:
            self.queue.hand_back(self.name, delivery)
            self.status.set(task.result, QUEUED, reason=f"handed back: {error.message}", job_id=job.id)
            raise
        except (redis.ConnectionError, redis.TimeoutError):
            raise  # Redis itself is away: the run loop hands the job back once it returns
        except SeparationFailed as failure:
            self.fail(delivery, task, str(failure))
            return
        except Exception as error:  # a bug must not crash-loop the worker on the same job forever
            log.exception("worker %s: job %s raised", self.name, job.songhash)
            self.fail(delivery, task, f"internal error: {error!r}")
            return
        self.queue.ack(self.name, delivery)
        self.metrics.jobs_completed.inc()

    def report_progress(self, result: str, percent: float) -> None:
        try:
            self.status.progress(result, percent)
        except redis.RedisError:
            pass  # progress is a courtesy; the separation goes on

    def fail(self, delivery: Delivery, task: Task, reason: str) -> None:
        job = task.job
        attempt = job.attempts + 1
        self.metrics.jobs_failed.inc()
        if attempt < self.settings.max_attempts:
            log.warning("worker %s: job %s attempt %d failed, will retry: %s", self.name, job.songhash, attempt, reason)
            self.queue.retry(self.name, delivery, job.next_attempt())
            self.status.set(task.result, QUEUED, reason=f"attempt {attempt} failed: {reason}", attempts=attempt)
            self.metrics.jobs_retried.labels("failed").inc()
            return
        log.error("worker %s: job %s failed after %d attempts: %s", self.name, job.songhash, attempt, reason)
        self.queue.bury(self.name, delivery, reason)
        self.status.set(task.result, FAILED, reason=reason, attempts=attempt, job_id=job.id)
        self.metrics.jobs_dead_lettered.inc()

    def process(self, task: Task) -> None:
        job, options = task.job, task.options
        model = options.model or self.settings.demucs_model
        started = time.monotonic()
        work_dir = str(self.settings.work_dir) if self.settings.work_dir else None
        with tempfile.TemporaryDirectory(prefix=f"{job.songhash}-", dir=work_dir) as scratch:
            run = DemucsRun(model, Path(scratch) / f"{job.songhash}.mp3", Path(scratch) / "separated", options)
            try:
                self.store.fetch_input(job.songhash, str(run.input_path))
            except NotFound:
                raise SeparationFailed(f"the input {self.store.queue_bucket}/{job.songhash}.mp3 is missing") from None
            log.info("worker %s: job %s: separating with %s (attempt %d)", self.name, job.songhash, model,
                     job.attempts + 1)
            tracks = separate(
                run, options.tracks(model), self.settings, Path(scratch) / "demucs.log",
                self.should_abandon, lambda percent: self.report_progress(task.result, percent),
            )
            separated = time.monotonic()
            self.metrics.separated(model, separated - started, run.input_path)
            for track, path in tracks.items():
                self.store.put_output(job.songhash, track, str(path), options)
        log.info(
            "worker %s: job %s separated in %.1f s, %d tracks stored in %.1f s",
            self.name, job.songhash, separated - started, len(tracks), time.monotonic() - separated,
        )
        # Call back before recording "done": a crash in between repeats the callback (same event id),
        # rather than losing it.
        callback_fields: dict[str, str | int] = {}
        if job.callback is not None:
            outcome = deliver(job.callback, job.songhash, job.id, self.settings)
            self.metrics.called_back(outcome)
            callback_fields = {
                "callback": outcome.detail,
                "callback_attempts": outcome.attempts,
                "callback_delivered": str(outcome.delivered).lower(),
            }
        # REST answers a repeat from "done" alone, so it must not outlive the tracks the store expires.
        retention = self.settings.retention_days * 86400 - (time.monotonic() - separated) - DONE_MARGIN
        self.status.set(task.result, DONE, worker=self.name, job_id=job.id, progress=100,
                        expire_in=int(retention) if self.settings.retention_days > 0 else None, **callback_fields)
