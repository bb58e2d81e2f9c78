"""A worker's Prometheus metrics, served on WORKER_METRICS_PORT: what became of its jobs, how long separating
took (and how that compares with the song's length), and how callbacks ended. The queue's depths are REST's to
report (rest/metrics.py): every worker would report the same.

Counting rule: every failed attempt counts in `msaas_jobs_failed_total`, and then once more in either
`msaas_jobs_retried_total{cause="failed"}` or `msaas_jobs_dead_lettered_total`; an unreadable job is
dead-lettered without an attempt, and a dead worker's job requeued by this one is retried with
`cause="worker_lost"`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from msaas.metrics import serve

SECONDS_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)
# Separation time over song length: below 1 is faster than real time.
REALTIME_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20)


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

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        serve(self.registry, port, host)

    def separated(self, model: str, seconds: float, song_seconds: float) -> None:
        self.separation_seconds.labels(model).observe(seconds)
        if song_seconds > 0:
            self.realtime_factor.labels(model).observe(seconds / song_seconds)

    def called_back(self, delivered: bool, detail: str) -> None:
        """A callback's final outcome: delivered, refused (its address), or failed."""
        kind = "delivered" if delivered else "refused" if detail.startswith("refused") else "failed"
        self.callbacks.labels(kind).inc()
