"""The worker loop, like rq's: take a job reliably, separate the song, store the tracks under the attempt's own names,
publish them (the status says done and the callbacks are queued, in one fenced step), and go on.

Every write of an attempt carries its delivery's fencing token (msaas/status.py), so a worker that wakes after its
lease ran out (a paused VM or container, a partition) changes nothing and removes only its own files. What happens
when an attempt does not end in its tracks is decided by the policies of worker/policies.py. A heartbeat thread
renews the leases of the jobs in hand, and puts back the jobs and callbacks of workers whose leases ran out.

Parts of the tracks are stored and named in the status as they are final (`ready`), so a client hears the song's
start while the rest is separated. A preview never waits for a song: while a worker separates one, it looks for a
waiting preview every second; when there is one, it stops the song's Demucs (SIGSTOP on its process group: it
keeps its memory, its lease is renewed, its time limit moves by the pause), separates the preview with the memory
left, and lets the song go on (SIGCONT). Pausing costs the song only the preview's time; a worker reserved for
previews would idle between them, and a lane alone would make a preview wait for a whole song.
"""

from __future__ import annotations

import logging
import os
import resource
import secrets
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import redis

from msaas.audio import SAMPLE_RATE
from msaas.backoff import Backoff
from msaas.claims import Claims
from msaas.engines import parse_engines, preview_lanes, served_lanes
from msaas.errors import BackendUnavailable, NotFound, local_resources
from msaas.eta import Estimates
from msaas.jobqueue import Delivery, JobQueue
from msaas.records import CANCELLED
from msaas.reliable import ReliableQueue
from msaas.scratch import claim
from msaas.settings import Settings
from msaas.status import SongStatus
from msaas.storage import ObjectStore
from worker import mixdown
from worker.callbacks import CallbackSender
from worker.demucs_run import Abandoned, DemucsRun, SeparationFailed
from worker.engines import capability
from worker.metrics import WorkerMetrics
from worker.policies import Cancellation, Cancelled, Lost, Retry, Stopped, outage
from worker.resources import group_rss
from worker.separation import Hooks, SeparationConfig, separate

log = logging.getLogger(__name__)
TAKE_WAIT = 5.0  # seconds a worker waits for a job before asking again, so a stop request is noticed that quickly
ALIVE_FILE = Path(tempfile.gettempdir()) / "msaas-worker-alive"
DONE_MARGIN = 3600  # seconds by which a "done" status expires before its tracks (clocks differ; stores round)
PREVIEW_LOOK = 1.0  # seconds between a busy worker's looks for a waiting preview


class Worker:
    def __init__(
        self, settings: Settings, queue: JobQueue, store: ObjectStore, metrics: WorkerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.separation = SeparationConfig.of(settings)
        self.retry = Retry.of(settings)
        self.metrics = metrics or WorkerMetrics()
        self.queue = queue
        self.store = store
        self.callbacks = ReliableQueue(queue.redis, f"{queue.name}:callbacks")
        self.status = SongStatus(queue.redis, queue, self.callbacks.name)
        self.claims = Claims(queue.redis, queue)
        self.estimates = Estimates(queue.redis, queue, settings.lease_seconds, settings.demucs_model)
        # Unique even with several workers on a host, and per start: a restarted container keeps its pod's hostname
        # and runs the worker as pid 1 again.
        self.name = f"{settings.hostname}-{os.getpid()}-{secrets.token_hex(3)}"
        self.stop_requested_at: float | None = None
        # The deliveries in hand, whose leases the heartbeat renews: a song, and a preview while the song is stopped.
        self.in_hand: list[Delivery] = []
        self.lent_mib = 0.0  # memory a stopped separation holds while a preview runs
        self.lent_cpu = 0.0  # CPU seconds previews used while a song was stopped: not the song's...
        self.lent_seconds = 0.0  # ...nor their wall time
        self.next_look = 0.0  # when to look for a waiting preview next (monotonic)
        self.sender = CallbackSender(settings, self.callbacks, self.claims, self.name, self.metrics)
        # The engines it serves (WORKER_ENGINES), the lanes it takes from, and what it says of itself in its heartbeat.
        self.engines = parse_engines(settings.worker_engines)
        self.lanes = served_lanes(self.engines)
        self.capability = capability(self.engines, settings.demucs_device, self.separation.cpus,
                                     self.separation.time_limit(), settings.max_song_seconds)

    def request_stop(self, signum: int, _frame: object = None) -> None:
        if self.stop_requested_at is None:
            log.info("worker %s: got signal %s, taking no more jobs", self.name, signum)
            self.stop_requested_at = time.monotonic()
            self.sender.request_stop()

    def should_abandon(self) -> bool:
        """True once a stop was requested and the current job has outlasted the grace period."""
        stop = self.stop_requested_at
        return stop is not None and time.monotonic() - stop > self.settings.shutdown_grace

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        log.info(
            "worker %s: taking %s jobs from %s (%s; %d CPUs, memory budget %.0f MiB, Demucs with %s)",
            self.name, "+".join(self.engines), self.queue.name, self.settings.demucs_device, self.separation.cpus,
            self.separation.memory_budget_mib, self.separation.demucs.malloc,
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
                    delivery = self.queue.take(self.name, self.settings.lease_seconds, self.lanes)
                    backoff.reset()
                    if delivery is None:
                        self.queue.wait(TAKE_WAIT)
                    else:
                        self.handle(delivery)
                except (redis.RedisError, BackendUnavailable) as error:
                    if not outage(error):
                        raise
                    delay = backoff.next_delay()
                    log.warning("worker %s: backend unavailable (%s); retrying in %.1f s", self.name, error, delay)
                    time.sleep(delay)
        finally:
            self.sender.stop()
            stopped.set()
            try:
                self.estimates.gone(self.name)
            except redis.RedisError:
                pass  # it drops out of the estimates' count by itself, two leases on
            log.info("worker %s: stopped", self.name)

    def check_store(self) -> None:
        """Say at start-up, not at the first job, when the object store is away or refuses our keys."""
        try:
            self.store.ensure_buckets()
        except BackendUnavailable as error:
            log.error("worker %s: %s", self.name, error.message)

    def heartbeat(self, stopped: threading.Event) -> None:
        while not stopped.wait(self.settings.lease_seconds / 3):
            self.beat()

    def beat(self) -> None:
        """Renew the lease of the job in hand, and put back the jobs and callbacks whose holders stopped answering."""
        ALIVE_FILE.touch()  # for the liveness probe: the heartbeat runs, whatever Redis is doing
        try:
            self.estimates.alive(self.name, self.capability)
            for current in list(self.in_hand):
                if not self.queue.renew(current, self.settings.lease_seconds):
                    log.warning("worker %s: job %s is no longer this worker's; stopping it", self.name,
                                current.job.songhash if current.job else current.taken.id)
            for reaped in self.status.reap(self.retry.max_attempts):
                self.metrics.jobs_retried.labels("worker_lost").inc()
                log.warning("worker %s: job %s of %s, whose lease ran out, %s", self.name, reaped.id, reaped.holder,
                            reaped.outcome)
            for reaped in self.callbacks.reap(max(1, self.settings.callback_attempts)):
                log.warning("worker %s: callback %s of %s, whose lease ran out, %s", self.name, reaped.id,
                            reaped.holder, reaped.outcome)
        except redis.RedisError as error:
            log.warning("worker %s: heartbeat failed: %s", self.name, error)

    def handle(self, delivery: Delivery) -> None:
        job = delivery.job
        if job is None:
            log.error("worker %s: unreadable job set aside: %s", self.name, delivery.error)
            self.queue.bury(delivery, delivery.error or "unreadable job")
            self.metrics.jobs_dead_lettered.inc()
            return
        try:
            started = self.status.start(delivery, self.name)
        except redis.ResponseError as error:  # Redis full: not started, handed back as after any outage
            if outage(error):
                self._hand_back_after_outage(delivery, error)
            raise
        if not started.started:
            log.info("worker %s: job %s not run: %s", self.name, job.songhash, started.outcome)
            return
        self.in_hand.append(delivery)
        try:
            self.attempt(delivery)
        finally:
            self.in_hand.remove(delivery)

    def attempt(self, delivery: Delivery) -> None:
        job = delivery.job
        try:
            self.process(delivery)
        except Stopped as stop:
            why = "cancelled" if isinstance(stop, Cancelled) else "no longer this worker's (its lease ran out)"
            log.info("worker %s: job %s %s: stopped, and its own files removed", self.name, job.songhash, why)
        except Abandoned:
            log.warning("worker %s: job %s handed back unfinished (shutting down)", self.name, job.songhash)
            self.status.retry(delivery, "handed back by a worker that shut down", 0.0, counted=False)
        except SeparationFailed as failure:
            self.fail(delivery, str(failure))
        except Exception as error:  # a bug must not crash-loop the worker on the same job forever
            if outage(error):
                self._hand_back_after_outage(delivery, error)
                raise
            log.exception("worker %s: job %s raised", self.name, job.songhash)
            self.fail(delivery, getattr(error, "message", None) or f"internal error: {error!r}")
        else:
            self.metrics.jobs_completed.inc()

    def _hand_back_after_outage(self, delivery: Delivery, error: Exception) -> None:
        reason = getattr(error, "message", None) or str(error)
        try:
            self.status.retry(delivery, f"handed back: {reason}", 0.0, counted=False)
        except redis.RedisError:
            pass  # Redis itself is away: the lease runs out and the job is reaped, counted

    def fail(self, delivery: Delivery, reason: str) -> None:
        """The retry policy: again after a backoff, or to the dead letters once its attempts are spent."""
        job, attempt = delivery.job, delivery.attempts + 1
        self.metrics.jobs_failed.inc()
        if self.retry.allows(attempt):
            delay = self.retry.delay(attempt)
            log.warning("worker %s: job %s attempt %d failed, retrying in %.0f s: %s", self.name, job.songhash,
                        attempt, delay, reason)
            self.status.retry(delivery, f"attempt {attempt} failed: {reason}", delay)
            self.metrics.jobs_retried.labels("failed").inc()
            return
        log.error("worker %s: job %s failed after %d attempts: %s", self.name, job.songhash, attempt, reason)
        self.status.fail(delivery, reason)
        self.metrics.jobs_dead_lettered.inc()

    def cancellation(self, delivery: Delivery) -> Cancellation:
        """Whether this attempt still holds its job, asked about once a second while it runs."""
        def still_held() -> bool | None:
            try:
                return self.queue.holds(delivery)
            except redis.RedisError:
                return None  # noticed once Redis is back; the outage itself is handled by the loop

        def cancelled() -> bool:
            fields = self.status.get(delivery.job.result.id)
            return fields.get("state") == CANCELLED and fields.get("job_id") == delivery.taken.id

        return Cancellation(still_held, cancelled)

    def preempt(self, group: int) -> float:
        """Separate a waiting preview while the song in hand is stopped (its Demucs, process group `group`); the
        seconds it was stopped: 0 if no preview waited, or the job in hand is one."""
        now = time.monotonic()
        if (now < self.next_look or len(self.in_hand) != 1 or self.in_hand[0].job.lane == "preview"
                or self.stop_requested_at is not None):
            return 0.0
        self.next_look = now + PREVIEW_LOOK
        try:
            previews = preview_lanes(self.lanes)  # those of the engines it serves
            preview = self.queue.take(self.name, self.settings.lease_seconds, previews) \
                if self.queue.previews_waiting(previews) else None
        except redis.RedisError:
            return 0.0  # the song goes on; Redis' outage is the loop's to handle
        if preview is None:
            return 0.0
        log.info("worker %s: stopping job %s for a preview", self.name, self.in_hand[0].job.songhash)
        cpu, self.lent_mib = _children_cpu(), group_rss(group) / 2**20
        _signal_group(group, signal.SIGSTOP)
        try:
            self.handle(preview)
        finally:
            _signal_group(group, signal.SIGCONT)
            self.lent_cpu += _children_cpu() - cpu
            self.lent_seconds += time.monotonic() - now
            self.lent_mib = 0.0
        log.info("worker %s: job %s goes on after %.1f s", self.name, self.in_hand[0].job.songhash,
                 time.monotonic() - now)
        return time.monotonic() - now

    def ready_part(self, delivery: Delivery, stored: list[str]) -> Callable[[int, dict[str, Path]], None]:
        """Stores a part of the attempt's tracks under its own names (in `stored`), then names it in the status."""
        job, token = delivery.job, delivery.taken.token

        def store(frames: int, files: dict[str, Path]) -> None:
            for track, path in files.items():
                stored.append(job.result.ready_key(token, frames, track, job.options.format))
                self.store.put_output(stored[-1], str(path), job.options.format)
            if self.status.ready(delivery, frames):
                log.info("worker %s: job %s: its first %.1f s are ready", self.name, job.songhash, frames / SAMPLE_RATE)

        return store

    def process(self, delivery: Delivery) -> None:
        job, token = delivery.job, delivery.taken.token
        options, result = job.options, job.result
        started, cpu_before, running = time.monotonic(), _children_cpu(), {}
        lent_cpu, lent_seconds = self.lent_cpu, self.lent_seconds
        cancellation = self.cancellation(delivery)
        config = self.separation
        if self.lent_mib:  # a preview, beside a stopped separation that holds its memory
            config = replace(config, memory_budget_mib=config.memory_budget_mib - self.lent_mib)

        def check() -> bool:
            cancellation.check()
            return self.should_abandon()

        def report(percent: float) -> None:
            running.setdefault("at", time.monotonic())  # Demucs' first bar
            try:
                self.status.progress(delivery, percent)
            except redis.RedisError:
                pass  # progress is a courtesy; the separation goes on

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
                     delivery.attempts + 1)
            parts: list[str] = []  # the parts of the tracks stored before the whole
            try:
                tracks, seconds, waveforms, reconstruction_db, encoded_in = separate(
                    run, mixdown.separated_tracks(options), config, Path(scratch) / "demucs.log",
                    Hooks(check, report, self.ready_part(delivery, parts), self.preempt))
            except BaseException:
                self._remove_own(parts)
                raise
            separated = time.monotonic()
            cpu_seconds = _children_cpu() - cpu_before - (self.lent_cpu - lent_cpu)
            self.metrics.separated(options.model, separated - started, seconds)
            written: list[str] = []
            try:
                for track, path in tracks.items():
                    cancellation.raise_if_gone()  # asked before each upload
                    written.append(result.attempt_key(token, track, options.format))
                    self.store.put_output(written[-1], str(path), options.format)
                mixdown.store_waveforms(self.store, result, token, waveforms, written)
                try:
                    published = self.status.publish(delivery, self.name, self.done_expiry(separated), seconds,
                                                    cpu_seconds, reconstruction_db)
                except (redis.ConnectionError, redis.TimeoutError):
                    written.clear()  # it may have run, its answer lost: its files may be the result's now
                    raise
                if not published:
                    cancellation.raise_if_gone()
                    raise Lost()
            except BaseException:
                self._remove_own(written + parts)
                raise
            self._remove_own(parts)  # the whole is served now
            lent = self.lent_seconds - lent_seconds  # previews' time while this song was stopped: not its own
            after = encoded_in + time.monotonic() - separated  # the tracks' encoding, upload and publishing
            demucs = separated - encoded_in - running.get("at", separated - encoded_in)  # first bar to run's end
            self.estimates.record(options.model, time.monotonic() - started - lent, options.work(seconds), after,
                                  max(0.0, demucs - lent))
        log.info(
            "worker %s: job %s separated in %.1f s, %d tracks published in %.1f s",
            self.name, job.songhash, separated - started, len(tracks), time.monotonic() - separated,
        )

    def done_expiry(self, separated: float) -> int | None:
        """REST answers a repeat from "done" alone, so it must not outlive the tracks the store expires."""
        if self.settings.retention_days <= 0:
            return None
        return int(self.settings.retention_days * 86400 - (time.monotonic() - separated) - DONE_MARGIN)

    def _remove_own(self, keys: list[str]) -> None:
        """An attempt that does not publish takes back what it wrote (its own names only)."""
        if not keys:
            return
        try:
            self.store.remove_outputs(keys)
        except BackendUnavailable as error:
            log.warning("worker %s: could not remove %d files of an unpublished attempt: %s", self.name, len(keys),
                        error.message)


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        pass  # it ended meanwhile


def _children_cpu() -> float:
    """CPU seconds this process' finished children (Demucs, ffmpeg) have used, in all."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
