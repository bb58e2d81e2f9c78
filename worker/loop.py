"""The worker loop: take a job reliably, separate the song, store the tracks, record `done` (queueing its
callback for the delivery threads, worker/deliveries.py), acknowledge.

Every failure of a job is counted: it is retried behind the other jobs until it has failed
`max_attempts` times, then it goes to the dead-letter list with its last error. A job interrupted by a
shutdown or an outage is handed back uncounted. A heartbeat thread keeps this worker's lease alive and
requeues the jobs of workers whose lease expired.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import tempfile
import threading
import time
from pathlib import Path

import redis

from msaas.backoff import Backoff
from msaas.callbackqueue import CallbackQueue, DueCallback
from msaas.errors import BackendUnavailable, LocalResourceError, NotFound, local_resources
from msaas.jobqueue import Delivery, JobQueue
from msaas.jobs import Job
from msaas.scratch import claim
from msaas.settings import Settings
from msaas.status import DONE, FAILED, QUEUED, SongStatus
from msaas.storage import ObjectStore
from worker.deliveries import CallbackSender, pending_fields
from worker.demucs_run import Abandoned, DemucsRun, SeparationFailed
from worker.metrics import WorkerMetrics
from worker.separation import SeparationConfig, separate

log = logging.getLogger(__name__)
TAKE_TIMEOUT = 5.0  # seconds a BLMOVE waits, so a stop request is noticed that quickly
BUSY_SONG_PAUSE = 1.0  # after putting back a song another worker is writing
ALIVE_FILE = Path(tempfile.gettempdir()) / "msaas-worker-alive"
DONE_MARGIN = 3600  # seconds by which a "done" status expires before its tracks (clocks differ; stores round)
CANCEL_CHECK_SECONDS = 1.0  # how often a running job asks whether it was cancelled


class Cancelled(Exception):
    """A client cancelled the job while it ran; nothing more is written for it."""


class Worker:
    def __init__(
        self, settings: Settings, queue: JobQueue, store: ObjectStore, status: SongStatus,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.separation = SeparationConfig.of(settings)
        self.metrics = metrics or WorkerMetrics()
        self.queue = queue
        self.store = store
        self.status = status
        # Unique even with several workers on a host, and per start: a restarted container keeps its pod's
        # hostname and runs the worker as pid 1 again, and a name reused would renew the dead process's lease
        # and strand the job it held (tests/test_containers.py kills a worker container mid-job).
        self.name = f"{settings.hostname}-{os.getpid()}-{secrets.token_hex(3)}"
        self.stop_requested_at: float | None = None
        self.current: str | None = None  # the result being written, whose lock the heartbeat renews
        self.callbacks = CallbackQueue(queue.redis, f"{queue.name}:callbacks")
        self.sender = CallbackSender(settings, self.callbacks, status, self.name, self.metrics)

    def request_stop(self, signum: int, _frame: object = None) -> None:
        if self.stop_requested_at is None:
            log.info("worker %s: got signal %s, taking no more jobs", self.name, signum)
            self.stop_requested_at = time.monotonic()
            self.sender.request_stop()  # undelivered callbacks go back for other workers now

    def should_abandon(self) -> bool:
        """True once a stop was requested and the current job has outlasted the grace period."""
        stop = self.stop_requested_at
        return stop is not None and time.monotonic() - stop > self.settings.shutdown_grace

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        log.info(
            "worker %s: taking jobs from %s (model %s on %s; %d CPUs, memory budget %.0f MiB, Demucs with %s)",
            self.name, self.queue.name, self.settings.demucs_model, self.settings.demucs_device,
            self.separation.cpus, self.separation.memory_budget_mib, self.separation.demucs.malloc,
        )
        stopped = threading.Event()
        heartbeat = threading.Thread(target=self.heartbeat, args=(stopped,), name="heartbeat", daemon=True)
        backoff = Backoff()
        try:
            self.beat()
            self.check_store()
            heartbeat.start()
            self.sender.start()
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
            self.sender.stop()
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
                self.queue.renew_result_lock(current, self.name, self.settings.lease_seconds)
            for dead_worker, job in self.queue.reap():
                self.metrics.jobs_retried.labels("worker_lost").inc()
                log.warning(
                    "worker %s: requeued job %s of %s, whose lease expired",
                    self.name, job.songhash if job else "(unreadable)", dead_worker,
                )
            for dead_worker in set(self.callbacks.reap(self.queue.lease_key)):
                log.warning("worker %s: requeued the undelivered callbacks of %s, whose lease expired",
                            self.name, dead_worker)
        except redis.RedisError as error:
            log.warning("worker %s: heartbeat failed: %s", self.name, error)

    def handle(self, delivery: Delivery) -> None:
        job = delivery.job
        if job is None:
            log.error("worker %s: unreadable job set aside: %s", self.name, delivery.error)
            self.queue.bury(self.name, delivery, delivery.error or "unreadable job")
            self.metrics.jobs_dead_lettered.inc()
            return
        result = job.result.id
        if not self.queue.lock_result(result, self.name, self.settings.lease_seconds):
            log.info("worker %s: song %s is being written by another worker; later", self.name, job.songhash)
            self.queue.postpone(self.name, delivery)
            time.sleep(BUSY_SONG_PAUSE)
            return
        self.current = result
        try:
            self.attempt(delivery, job)
        finally:
            self.current = None
            self.queue.unlock_result(result, self.name)

    def attempt(self, delivery: Delivery, job: Job) -> None:
        status = self.status.get(job.result.id)
        if status.get("state") == DONE and status.get("job_id") == job.id:
            log.info("worker %s: job %s was already done (a repeated delivery); dropped", self.name, job.songhash)
            self.queue.ack(self.name, delivery)
            return
        attempt = job.attempts + 1
        if not self.status.start(job, self.name, attempt):
            log.info("worker %s: job %s was cancelled before it started; dropped", self.name, job.songhash)
            self.queue.ack(self.name, delivery)
            return
        try:
            self.process(job)
        except Cancelled:
            log.info("worker %s: job %s cancelled; stopped, and nothing kept", self.name, job.songhash)
            self.queue.ack(self.name, delivery)
            return
        except Abandoned:
            log.warning("worker %s: job %s handed back unfinished (shutting down)", self.name, job.songhash)
            self.queue.hand_back(self.name, delivery)
            self.status.finish(job, QUEUED, "handed back by a worker that shut down")
            return
        except BackendUnavailable as error:
            self.queue.hand_back(self.name, delivery)
            self.status.finish(job, QUEUED, f"handed back: {error.message}")
            raise
        except (redis.ConnectionError, redis.TimeoutError):
            raise  # Redis itself is away: the run loop hands the job back once it returns
        except SeparationFailed as failure:
            self.fail(delivery, job, str(failure))
            return
        except LocalResourceError as error:
            # Counted like a failure: handed back uncounted, it would come straight back to this same full
            # disk, for ever, and the jobs behind it with it.
            log.error("worker %s: job %s: %s", self.name, job.songhash, error.message)
            self.fail(delivery, job, error.message)
            return
        except Exception as error:  # a bug must not crash-loop the worker on the same job forever
            log.exception("worker %s: job %s raised", self.name, job.songhash)
            self.fail(delivery, job, f"internal error: {error!r}")
            return
        self.queue.ack(self.name, delivery)
        self.metrics.jobs_completed.inc()

    def report_progress(self, result: str, percent: float) -> None:
        try:
            self.status.progress(result, percent)
        except redis.RedisError:
            pass  # progress is a courtesy; the separation goes on

    def fail(self, delivery: Delivery, job: Job, reason: str) -> None:
        attempt = job.attempts + 1
        self.metrics.jobs_failed.inc()
        if attempt < self.settings.max_attempts:
            log.warning("worker %s: job %s attempt %d failed, will retry: %s", self.name, job.songhash, attempt, reason)
            self.queue.retry(self.name, delivery, job.next_attempt())
            self.status.finish(job, QUEUED, f"attempt {attempt} failed: {reason}", attempts=attempt)
            self.metrics.jobs_retried.labels("failed").inc()
            return
        log.error("worker %s: job %s failed after %d attempts: %s", self.name, job.songhash, attempt, reason)
        self.queue.bury(self.name, delivery, reason)
        self.status.finish(job, FAILED, reason, attempts=attempt)
        self.metrics.jobs_dead_lettered.inc()

    def checker(self, job: Job):
        """What a running separation asks about once in a while: True to hand the job back (shutting down);
        it raises Cancelled once the job was cancelled (asked of Redis once a second at most)."""
        checked = [time.monotonic()]

        def check() -> bool:
            if time.monotonic() - checked[0] >= CANCEL_CHECK_SECONDS:
                checked[0] = time.monotonic()
                self.raise_if_cancelled(job)
            return self.should_abandon()

        return check

    def raise_if_cancelled(self, job: Job) -> None:
        try:
            cancelled = self.status.is_cancelled(job)
        except redis.RedisError:
            return  # a cancel is noticed once Redis is back; the outage itself is handled by the loop
        if cancelled:
            raise Cancelled()

    def process(self, job: Job) -> None:
        options, result = job.options, job.result
        started = time.monotonic()
        work_dir = str(self.settings.work_dir) if self.settings.work_dir else None
        with (
            local_resources(f"WORK_DIR {work_dir or tempfile.gettempdir()}"),
            tempfile.TemporaryDirectory(prefix=f"{job.songhash}-", dir=claim(work_dir, "worker")) as scratch,
        ):
            run = DemucsRun(options.model, Path(scratch) / f"{job.songhash}.mp3", Path(scratch) / "separated",
                            options)
            try:
                self.store.fetch_input(job.songhash, str(run.input_path))
            except NotFound:
                raise SeparationFailed(f"the input {self.store.queue_bucket}/{job.songhash}.mp3 is missing") from None
            log.info("worker %s: job %s: separating with %s (attempt %d)", self.name, job.songhash, options.model,
                     job.attempts + 1)
            tracks, seconds = separate(
                run, options.tracks(), self.separation, Path(scratch) / "demucs.log",
                self.checker(job), lambda percent: self.report_progress(result.id, percent),
            )
            separated = time.monotonic()
            self.metrics.separated(options.model, separated - started, seconds)
            self.raise_if_cancelled(job)
            for track, path in tracks.items():
                self.store.put_output(result, track, str(path), options.format)
        log.info(
            "worker %s: job %s separated in %.1f s, %d tracks stored in %.1f s",
            self.name, job.songhash, separated - started, len(tracks), time.monotonic() - separated,
        )
        # REST answers a repeat from "done" alone, so it must not outlive the tracks the store expires.
        retention = self.settings.retention_days * 86400 - (time.monotonic() - separated) - DONE_MARGIN
        expire_in = int(retention) if self.settings.retention_days > 0 else None
        callback_fields = pending_fields() if job.callback is not None else {}

        def queue_callback(pipe: redis.client.Pipeline) -> None:
            if job.callback is not None:
                self.callbacks.push(DueCallback(result.id, job.songhash, job.id, job.callback), pipe)

        # "done" and the callback's delivery entry in one transaction, which a cancel wins: a crash cannot lose the
        # callback, and the delivery threads, not this loop, wait on the receiver.
        if not self.status.finish(job, DONE, worker=self.name, progress=100, expire_in=expire_in,
                                  then=queue_callback, **callback_fields):
            # Cancelled while the tracks were being written: take back what this job wrote.
            self.store.remove_result(result, options.tracks(), options.format)
            raise Cancelled()
