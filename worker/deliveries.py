"""The worker's delivery threads: take due callbacks off the callback queue, deliver them (with retries and
backoff), and record each outcome in the song's status. Separation never waits on a receiver.

A callback is durable from the moment its song is `done`: it sits in the callback queue, or in this
worker's processing list while a thread delivers it. On shutdown the threads hand back what they hold; if
the worker dies, another worker's heartbeat reaps its list, as it does its jobs.
"""

from __future__ import annotations

import logging
import threading

import redis

from msaas.backoff import Backoff
from msaas.callbackqueue import CallbackQueue, DueCallback, Taken
from msaas.deadline import Deadline
from msaas.settings import Settings
from msaas.status import SongStatus
from worker.callback import CallbackOutcome, deliver
from worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)
TAKE_TIMEOUT = 5.0  # seconds a BLMOVE waits, so a stop request is noticed that quickly
PENDING = "pending"


class Interrupted(Exception):
    """The worker is stopping: the callback goes back on the queue undelivered."""


def pending_fields() -> dict[str, str | int]:
    """The status fields of a callback not yet delivered (recorded with `done`)."""
    return {"callback": PENDING, "callback_state": PENDING, "callback_attempts": 0, "callback_delivered": "false"}


def outcome_fields(outcome: CallbackOutcome, final: bool) -> dict[str, str | int]:
    if not final:
        state = PENDING
    else:
        state = "delivered" if outcome.delivered else "failed"
    return {
        "callback": outcome.detail,
        "callback_state": state,
        "callback_attempts": outcome.attempts,
        "callback_delivered": str(outcome.delivered).lower(),
    }


class CallbackSender:
    """`settings.callback_threads` threads delivering callbacks for worker `worker`."""

    def __init__(
        self, settings: Settings, queue: CallbackQueue, status: SongStatus, worker: str, metrics: WorkerMetrics
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.status = status
        self.worker = worker
        self.metrics = metrics
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self.serve, name=f"callbacks-{index}", daemon=True)
            for index in range(max(1, settings.callback_threads))
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def request_stop(self) -> None:
        """Take no more callbacks, and cut the waits between attempts short (from the signal handler)."""
        self.stopping.set()

    def stop(self) -> None:
        """Stop taking callbacks; wait for attempts in flight (each ends by its deadline), then hand back
        whatever is still held."""
        self.stopping.set()
        ended = Deadline(self.settings.callback_timeout + TAKE_TIMEOUT + 1, "stopping the delivery threads")
        for thread in self.threads:
            thread.join(ended.remaining())
        try:
            for raw in self.queue.hand_back_all(self.worker):
                log.warning("worker %s: handed back an undelivered callback: %s", self.worker, raw[:200])
        except redis.RedisError as error:
            log.warning("worker %s: callbacks not handed back (%s); they will be reaped", self.worker, error)

    def serve(self) -> None:
        backoff = Backoff()
        while not self.stopping.is_set():
            try:
                taken = self.queue.take(self.worker, TAKE_TIMEOUT)
                backoff.reset()
                if taken is not None:
                    self.handle(taken)
            except redis.RedisError as error:
                delay = backoff.next_delay()
                log.warning("worker %s: callbacks: redis unavailable (%s); retrying in %.1f s",
                            self.worker, error, delay)
                self.stopping.wait(delay)
            except Exception:  # a bug must not silently end a delivery thread; the entry is handed back on stop
                log.exception("worker %s: callback delivery raised", self.worker)
                self.stopping.wait(backoff.next_delay())

    def handle(self, taken: Taken) -> None:
        due = taken.due
        if self.stopping.is_set():  # taken by a BLMOVE that was waiting when the stop came: not ours to start
            self.queue.hand_back(self.worker, taken)
            return
        if due is None:
            log.error("worker %s: unreadable callback entry dropped: %s", self.worker, taken.raw[:200])
            self.queue.done(self.worker, taken)
            return
        try:
            outcome = deliver(due.callback, due.songhash, due.event_id, self.settings, self.pause,
                              lambda failed: self.record(due, failed, final=False))
        except Interrupted:
            log.info("worker %s: song %s: callback handed back (stopping)", self.worker, due.songhash)
            self.queue.hand_back(self.worker, taken)
            return
        self.metrics.called_back(outcome)
        with self.status.redis.pipeline() as pipe:  # the outcome recorded and the entry dropped together
            self.status.record_callback(due.result, due.event_id, outcome_fields(outcome, final=True), pipe)
            self.queue.done(self.worker, taken, pipe)
            pipe.execute()

    def record(self, due: DueCallback, outcome: CallbackOutcome, final: bool) -> None:
        try:
            self.status.record_callback(due.result, due.event_id, outcome_fields(outcome, final))
        except redis.RedisError:
            pass  # progress is a courtesy; the final outcome is recorded with the entry's removal

    def pause(self, seconds: float) -> None:
        """The backoff between attempts, cut short by a stop request."""
        if self.stopping.wait(seconds):
            raise Interrupted()
