"""A worker's Prometheus metrics, served on WORKER_METRICS_PORT: what became of its jobs, how long separating
took (and how that compares with the song's length), how callbacks ended, and its processing-list depth.

Counting rule: every failed attempt counts in `msaas_jobs_failed_total`, and then once more in either
`msaas_jobs_retried_total{cause="failed"}` or `msaas_jobs_dead_lettered_total`; an unreadable job is
dead-lettered without an attempt, and a dead worker's job requeued by this one is retried with
`cause="worker_lost"`.
"""

from __future__ import annotations

from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from msaas.jobqueue import JobQueue
from msaas.metrics import serve
from worker.callback import CallbackOutcome

SECONDS_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)
# Separation time over song length: below 1 is faster than real time.
REALTIME_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20)


class ProcessingDepth:
    """This worker's processing list, read from Redis when scraped."""

    def __init__(self, queue: JobQueue, worker: str) -> None:
        self.queue = queue
        self.worker = worker

    def describe(self) -> list[GaugeMetricFamily]:
        return [self._family(0)]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            yield self._family(self.queue.redis.llen(self.queue.processing_list(self.worker)))
        except redis.RedisError:
            return  # the worker logs the outage; the scrape still shows the counters

    @staticmethod
    def _family(depth: int) -> GaugeMetricFamily:
        return GaugeMetricFamily("msaas_worker_processing_depth", "jobs in this worker's processing list", value=depth)


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs_completed = Counter("msaas_jobs_completed", "jobs separated and stored", registry=self.registry)
        self.jobs_failed = Counter("msaas_jobs_failed", "attempts that failed", registry=self.registry)
        self.jobs_retried = Counter(
            "msaas_jobs_retried", "jobs queued again, by cause (failed, worker_lost)", ["cause"],
            registry=self.registry,
        )
        self.jobs_dead_lettered = Counter(
            "msaas_jobs_dead_lettered", "jobs put on the dead-letter list", registry=self.registry
        )
        self.separation_seconds = Histogram(
            "msaas_separation_seconds", "seconds from fetching a song to its tracks written, by model", ["model"],
            buckets=SECONDS_BUCKETS, registry=self.registry,
        )
        self.realtime_factor = Histogram(
            "msaas_separation_realtime_factor", "separation seconds per second of audio, by model", ["model"],
            buckets=REALTIME_BUCKETS, registry=self.registry,
        )
        self.callbacks = Counter(
            "msaas_callbacks", "callbacks, by how the last attempt ended (delivered, failed, refused)", ["outcome"],
            registry=self.registry,
        )

    def watch(self, queue: JobQueue, worker: str) -> None:
        self.registry.register(ProcessingDepth(queue, worker))

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        serve(self.registry, port, host)

    def separated(self, model: str, seconds: float, song_seconds: float) -> None:
        self.separation_seconds.labels(model).observe(seconds)
        if song_seconds > 0:
            self.realtime_factor.labels(model).observe(seconds / song_seconds)

    def called_back(self, outcome: CallbackOutcome) -> None:
        if outcome.delivered:
            kind = "delivered"
        elif outcome.detail.startswith("refused"):
            kind = "refused"
        else:
            kind = "failed"
        self.callbacks.labels(kind).inc()
