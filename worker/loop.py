"""The worker loop: take a job reliably, separate the song, store the tracks, call back, acknowledge."""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import time
from pathlib import Path

import redis

from msaas.backoff import Backoff
from msaas.errors import BackendUnavailable, NotFound
from msaas.jobqueue import Delivery, JobQueue
from msaas.jobs import FOUR_STEMS, MODEL_TRACKS, Job
from msaas.settings import Settings
from msaas.status import DONE, FAILED, PROCESSING, SongStatus
from msaas.storage import ObjectStore
from worker.callback import notify
from worker.demucs_run import DemucsRun, SeparationFailed, separate

log = logging.getLogger(__name__)
TAKE_TIMEOUT = 5.0  # seconds a BLMOVE waits, so a stop request is noticed that quickly


class Worker:
    def __init__(self, settings: Settings, queue: JobQueue, store: ObjectStore, status: SongStatus) -> None:
        self.settings = settings
        self.queue = queue
        self.store = store
        self.status = status
        self.name = f"{settings.hostname}-{os.getpid()}"  # unique even with several workers on a host
        self.stopping = False

    def request_stop(self, signum: int, _frame: object = None) -> None:
        if not self.stopping:
            log.info("worker %s: got signal %s, stopping after the current job", self.name, signum)
        self.stopping = True

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        log.info(
            "worker %s: taking jobs from %s (model %s on %s)",
            self.name, self.queue.name, self.settings.demucs_model, self.settings.demucs_device,
        )
        backoff = Backoff()
        try:
            while not self.stopping:
                try:
                    delivery = self.queue.take(self.name, TAKE_TIMEOUT)
                    if delivery is not None:
                        self.handle(delivery)
                    backoff.reset()
                except (redis.ConnectionError, redis.TimeoutError, BackendUnavailable) as error:
                    delay = backoff.next_delay()
                    log.warning("worker %s: backend unavailable (%s); retrying in %.1f s", self.name, error, delay)
                    time.sleep(delay)
        finally:
            log.info("worker %s: stopped", self.name)

    def handle(self, delivery: Delivery) -> None:
        job = delivery.job
        if job is None:
            log.error("worker %s: unreadable job buried in %s: %s", self.name, self.queue.dead_letters, delivery.error)
            self.queue.bury(self.name, delivery, delivery.error or "unreadable job")
            return
        self.status.set(job.songhash, PROCESSING, worker=self.name)
        try:
            self.process(job)
        except SeparationFailed as failure:
            log.error("worker %s: job %s failed: %s", self.name, job.songhash, failure)
            self.status.set(job.songhash, FAILED, reason=str(failure), worker=self.name)
        except BackendUnavailable:
            # The store went away mid-job: hand the job back so it is retried, not lost.
            self.queue.requeue(self.name, delivery)
            raise
        self.queue.ack(self.name, delivery)

    def process(self, job: Job) -> None:
        model = job.model or self.settings.demucs_model
        started = time.monotonic()
        work_dir = str(self.settings.work_dir) if self.settings.work_dir else None
        with tempfile.TemporaryDirectory(prefix=f"{job.songhash}-", dir=work_dir) as scratch:
            run = DemucsRun(model, Path(scratch) / f"{job.songhash}.mp3", Path(scratch) / "separated")
            try:
                self.store.fetch_input(job.songhash, str(run.input_path))
            except NotFound:
                raise SeparationFailed(f"the input {self.store.queue_bucket}/{job.songhash}.mp3 is missing") from None
            log.info("worker %s: job %s: separating with %s", self.name, job.songhash, model)
            tracks = separate(run, MODEL_TRACKS.get(model, FOUR_STEMS), self.settings, Path(scratch) / "demucs.log")
            separated = time.monotonic()
            for track, path in tracks.items():
                self.store.put_output(job.songhash, track, str(path))
        log.info(
            "worker %s: job %s separated in %.1f s, %d tracks stored in %.1f s",
            self.name, job.songhash, separated - started, len(tracks), time.monotonic() - separated,
        )
        self.status.set(job.songhash, DONE, worker=self.name)
        if job.callback is not None:
            notify(job.callback, job.songhash, self.settings.callback_timeout)
