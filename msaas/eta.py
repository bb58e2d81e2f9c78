"""How long until a song is done: from the workers' measured speed per model and the work ahead of it.

Each worker records how long each separation took against its work (`record`): the seconds of audio Demucs went
over (a range's with its context, times its passes: `Options.work`). A model's speed is a least-squares line
through its last samples: a fixed cost (loading the model, writing the tracks) plus seconds per second of work. A
queued song's estimate plays the queue forward on the live workers: each takes the next job in turn when it is free
(those busy now are free when their current song's remaining part is done), up to this song. A preview waits for no
song: a busy worker pauses its song for it (worker/loop.py), so previews are played forward on every live worker
at once.
At most `AHEAD` jobs ahead are looked at one by one; beyond them, their mean is taken for the rest, so an estimate
costs the same whatever the queue's length. A processing song's estimate moves from what the model's speed leaves of
it to its remaining share at the pace it has kept so far, as its progress grows.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass

import redis

from msaas.jobqueue import JobQueue

AHEAD = 200  # jobs ahead looked at one by one
SAMPLES = 20  # separations per model a speed is fitted to
DEFAULT_SPEED = (5.0, 1.0)  # (seconds, seconds per audio second) before a model has been measured


@dataclass(frozen=True)
class Speed:
    fixed: float  # seconds a separation costs whatever its length
    per_second: float  # seconds per second of audio

    def seconds(self, audio_seconds: float) -> float:
        return self.fixed + self.per_second * audio_seconds


def speed_key(model: str) -> str:
    return f"speed:{model}"


def workers_key(queue: str) -> str:
    return f"{queue}:workers"


class Estimates:
    def __init__(self, connection: redis.Redis, queue: JobQueue, lease_seconds: float, default_model: str) -> None:
        self.redis = connection
        self.queue = queue
        self.lease_seconds = lease_seconds
        self.default_model = default_model

    def record(self, model: str, wall_seconds: float, work: float) -> None:
        """A worker's separation, for the model's speed."""
        with self.redis.pipeline() as pipe:
            pipe.lpush(speed_key(model), f"{wall_seconds:.3f},{work:.3f}")
            pipe.ltrim(speed_key(model), 0, SAMPLES - 1)
            pipe.execute()

    def alive(self, worker: str) -> None:
        """A worker's heartbeat: it counts among the workers the queue is played forward on."""
        self.redis.zadd(workers_key(self.queue.name), {worker: time.time()})

    def gone(self, worker: str) -> None:
        self.redis.zrem(workers_key(self.queue.name), worker)

    def workers(self) -> int:
        since = time.time() - 2 * self.lease_seconds
        return self.redis.zcount(workers_key(self.queue.name), since, "+inf")

    def speed(self, model: str) -> Speed:
        samples = [tuple(map(float, sample.split(","))) for sample in self.redis.lrange(speed_key(model), 0, -1)]
        return fit(samples)

    def processing(self, model: str, work: float, progress: float, started_at: float) -> float:
        """Seconds until a song being separated is done: what the model's speed leaves of it, and what its own pace
        leaves, weighed by its progress. Early on its pace is mostly the model's loading and the song's decoding
        (not in the progress), late the speed misses how busy the machine is now."""
        elapsed = max(0.0, time.time() - started_at)
        expected = max(1.0, self.speed(model).seconds(work) - elapsed)
        if progress <= 0:
            return expected
        share = min(progress, 100.0) / 100
        return (1 - share) * expected + share * elapsed * (1 - share) / share

    def queued(self, job_id: str, model: str, work: float) -> float | None:
        """Seconds until a queued job is done; None if it is not waiting (any more)."""
        lanes = self.queue.entries.lanes
        lane = self.queue.entries.fields(job_id, "lane")[0]
        if lane not in lanes:
            return None
        ahead: list[str] = []
        total = 0
        for name in lanes[:lanes.index(lane) + 1]:
            key = self.queue.entries.key(f"lane:{name}")
            rank = self.redis.zrank(key, job_id) if name == lane else self.redis.zcard(key)
            if rank is None:
                return None
            if (count := min(rank, AHEAD - len(ahead))) > 0:
                ahead += self.redis.zrange(key, 0, count - 1)
            total += rank
        beyond = total - len(ahead)
        speeds: dict[str, Speed] = {}

        def duration(model_name: str, seconds: float) -> float:
            if model_name not in speeds:
                speeds[model_name] = self.speed(model_name)
            return speeds[model_name].seconds(seconds)

        jobs = [duration(m or self.default_model, float(w or s or 0))
                for m, s, w in self._fields(ahead, "model", "seconds", "work")]
        busy = [] if lane == "preview" else sorted(self._busy(duration))
        free = (busy + [0.0] * self.workers())[:max(1, self.workers())] or [0.0]
        heapq.heapify(free)
        for length in jobs:
            heapq.heappush(free, heapq.heappop(free) + length)
        start = heapq.heappop(free)
        if beyond and jobs:
            start += beyond * (sum(jobs) / len(jobs)) / max(1, self.workers())
        return start + duration(model, work)

    def _busy(self, duration) -> list[float]:
        """Seconds until each job being separated now is done."""
        taken = self.redis.zrange(self.queue.entries.key("taken"), 0, 63)
        fields = self._fields(taken, "model", "seconds", "work", "result")
        with self.redis.pipeline(transaction=False) as pipe:
            for *_, result in fields:
                pipe.hmget(f"status:{result or '-'}", "progress", "processing_at", "job_id")
            statuses = pipe.execute()
        remaining = []
        for (model, seconds, work, _), entry, status in zip(fields, taken, statuses, strict=True):
            work = float(work or seconds or 0)
            if status[2] != entry or status[1] is None:
                remaining.append(duration(model or self.default_model, work))
                continue
            remaining.append(self.processing(model or self.default_model, work, float(status[0] or 0),
                                             float(status[1])))
        return remaining

    def _fields(self, entries: list[str], *names: str) -> list[list[str | None]]:
        with self.redis.pipeline(transaction=False) as pipe:
            for entry in entries:
                pipe.hmget(self.queue.entries.entry_key(entry), names)
            return pipe.execute()


def fit(samples: list[tuple[float, float]]) -> Speed:
    """The least-squares line wall = fixed + per_second × audio through (wall, audio) samples."""
    if not samples:
        return Speed(*DEFAULT_SPEED)
    n = len(samples)
    mean_wall = sum(wall for wall, _ in samples) / n
    mean_audio = sum(audio for _, audio in samples) / n
    spread = sum((audio - mean_audio) ** 2 for _, audio in samples)
    if spread < 1e-6 or n < 3:  # one length only: all of it per second of audio
        return Speed(0.0, mean_wall / max(mean_audio, 1e-6))
    per_second = sum((audio - mean_audio) * (wall - mean_wall) for wall, audio in samples) / spread
    fixed = mean_wall - per_second * mean_audio
    if per_second <= 0 or fixed < 0:  # noise: fall back to the plain ratio
        return Speed(0.0, mean_wall / max(mean_audio, 1e-6))
    return Speed(fixed, per_second)
