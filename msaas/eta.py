"""How long until a song is done: from the workers' measured speed per model and the work ahead of it.

Each worker records how long each separation took against its work (`record`): the seconds of audio Demucs went
over (a range's with its context, times its passes: `Options.work`). A model's speed is a least-squares line
through its last samples: a fixed cost (loading the model, writing the tracks) plus seconds per second of work. A
queued song's estimate plays the queue forward on the live workers: each takes the next job in turn when it is free
(those busy now are free when their current song's remaining part is done), up to this song. A preview waits for no
song: a busy worker pauses its song for it (worker/loop.py), so previews are played forward on every live worker
at once.
At most `AHEAD` jobs ahead are looked at one by one; beyond them, their mean is taken for the rest, so an estimate
costs the same whatever the queue's length. A processing song's estimate is what the model's speed leaves of it,
then, once Demucs draws its bars, the rest at the pace it keeps; that pace against the model's speed is its
worker's pace now (a machine busier than when the speed was learnt is slower), and the jobs the worker takes
next are played forward at it.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, replace

import redis

from msaas.engines import Capability, lanes_of, preview_lanes
from msaas.jobqueue import JobQueue

AHEAD = 200  # jobs ahead looked at one by one
SAMPLES = 20  # separations per model a speed is fitted to
DEFAULT_SPEED = (5.0, 1.0)  # (seconds, seconds per audio second) before a model has been measured
POOL_READ = 256  # live workers whose capabilities the door reads at most
MIN_PROGRESS = 2.0  # percent of Demucs' run after which a song's own pace predicts the rest of it
MIN_FACTOR, MAX_FACTOR = 0.5, 4.0  # how far a worker's pace now may stray from the model's learnt speed
TRUSTED_SHARE = 0.5  # of Demucs' run, from which its own pace alone predicts the rest of it


@dataclass(frozen=True)
class Speed:
    fixed: float  # seconds a separation costs whatever its length
    per_second: float  # seconds per second of audio
    after: float = 0.0  # of those, the seconds per second of audio after Demucs' run: the tracks' encoding, upload
    running: float = 0.0  # seconds per second of audio from Demucs' first bar to its run's end

    def seconds(self, audio_seconds: float) -> float:
        return self.fixed + self.per_second * audio_seconds


def speed_key(model: str) -> str:
    return f"speed:{model}"


def workers_key(queue: str) -> str:
    return f"{queue}:workers"


def capability_key(queue: str, worker: str) -> str:
    return f"{queue}:worker:{worker}"


class Estimates:
    def __init__(self, connection: redis.Redis, queue: JobQueue, lease_seconds: float, default_model: str) -> None:
        self.redis = connection
        self.queue = queue
        self.lease_seconds = lease_seconds
        self.default_model = default_model

    def record(self, model: str, wall_seconds: float, work: float, after: float = 0.0, running: float = 0.0) -> None:
        """A worker's separation, for the model's speed: its wall time, its work, the seconds of it after Demucs'
        run, and those from Demucs' first bar to the run's end."""
        with self.redis.pipeline() as pipe:
            pipe.lpush(speed_key(model), f"{wall_seconds:.3f},{work:.3f},{after:.3f},{running:.3f}")
            pipe.ltrim(speed_key(model), 0, SAMPLES - 1)
            pipe.execute()

    def alive(self, worker: str, capability: Capability | None = None) -> None:
        """A worker's heartbeat: it counts among the workers the queue is played forward on (and workers silent
        for ten leases are forgotten, so the set does not grow with every restart), and says what it serves."""
        now = time.time()
        with self.redis.pipeline() as pipe:
            if capability is not None:
                pipe.set(capability_key(self.queue.name, worker), capability.to_json(), ex=int(10 * self.lease_seconds))
            pipe.zadd(workers_key(self.queue.name), {worker: now})
            pipe.zremrangebyscore(workers_key(self.queue.name), "-inf", now - 10 * self.lease_seconds)
            pipe.execute()

    def gone(self, worker: str) -> None:
        self.redis.zrem(workers_key(self.queue.name), worker)
        self.redis.delete(capability_key(self.queue.name, worker))

    def capabilities(self) -> list[Capability]:
        """What the live workers serve (at most `POOL_READ` of them: enough to know a pool, bounded whatever the
        fleet)."""
        since = time.time() - 2 * self.lease_seconds
        names = self.redis.zrangebyscore(workers_key(self.queue.name), since, "+inf", start=0, num=POOL_READ)
        if not names:
            return []
        said = self.redis.mget([capability_key(self.queue.name, name) for name in names])
        return [capability for text in said if text and (capability := Capability.from_json(text))]

    def workers(self) -> int:
        since = time.time() - 2 * self.lease_seconds
        return self.redis.zcount(workers_key(self.queue.name), since, "+inf")

    def workers_serving(self, model: str) -> int:
        """The live workers that serve `model`'s engine (all live workers where none says what it serves)."""
        said = self.capabilities()
        return sum(capability.serves(model) for capability in said) if said else self.workers()

    def speed(self, model: str) -> Speed:
        samples = [tuple(map(float, sample.split(","))) for sample in self.redis.lrange(speed_key(model), 0, -1)]
        samples = [(*sample, 0.0, 0.0)[:4] for sample in samples]  # those from before are (wall, work)
        work = sum(sample[1] for sample in samples) or 1.0
        return replace(fit([sample[:2] for sample in samples]), after=sum(sample[2] for sample in samples) / work,
                       running=sum(sample[3] for sample in samples) / work)

    def processing(self, model: str, work: float, progress: float, started_at: float,
                   running_at: float | None = None, progress_at: float | None = None) -> float:
        """Seconds until a song being separated is done."""
        return self._running(self.speed(model), work, progress, started_at, running_at, progress_at)[0]

    @staticmethod
    def _running(speed: Speed, work: float, progress: float, started_at: float, running_at: float | None,
                 progress_at: float | None = None) -> tuple[float, float]:
        """(seconds until a song being separated is done, its worker's pace against the model's speed). Before
        Demucs draws its first bars, what the model's speed leaves of it; then the rest of Demucs' run at the pace
        it kept from its first bar to its last percentage (`progress_at`: the model's loading and the song's
        decoding before it are not in the progress), less the time since that percentage, then what comes after it
        (the tracks' encoding and upload), at the worker's pace.

        The progress moves in steps (a percentage per Demucs segment, read once a second): its pace is the time it
        took to reach its last step, never the time since the run began over that step, which counted every second
        spent on the next segment as no progress at all (a song one segment into eleven looked up to twice as slow
        as it was, and every job its worker takes next with it)."""
        now = time.time()
        if progress < MIN_PROGRESS or running_at is None:
            return max(1.0, speed.seconds(work) - (now - started_at)), 1.0
        share = min(progress, 100.0) / 100
        reached = now if progress_at is None else min(progress_at, now)
        pace = max(0.0, reached - running_at) / share  # seconds the whole run takes at this pace
        usual = (speed.running or speed.per_second) * work  # Demucs' run as long as it usually takes
        # The first segments also pay for the run's warm-up: their pace is trusted as the run goes on, in full
        # from TRUSTED_SHARE of it; before, it is weighed against the model's speed.
        weight = min(1.0, share / TRUSTED_SHARE)
        factor = min(max(1 + (pace / max(usual, 1e-6) - 1) * weight, MIN_FACTOR), MAX_FACTOR)
        left = max(0.0, factor * usual * (1 - share) - (now - reached))
        return max(1.0, left + factor * speed.after * work), factor

    def queued(self, job_id: str, model: str, work: float) -> float | None:
        """Seconds until a queued job is done; None if it is not waiting (any more)."""
        lane = self.queue.entries.fields(job_id, "lane")[0]
        if lane not in self.queue.entries.lanes:
            return None
        lanes = lanes_of(lane)  # the jobs ahead: those of its engine
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

        def speed(name: str | None) -> Speed:
            name = name or self.default_model
            if name not in speeds:
                speeds[name] = self.speed(name)
            return speeds[name]

        def duration(name: str | None, work: float, factor: float) -> float:
            """A job's seconds on a worker going at `factor` times the model's speed."""
            return speed(name).fixed + factor * speed(name).per_second * work

        # Each worker: when it is free, and its pace now (its song's, against the model's speed: a busy machine
        # is slower than the one the speed was learnt on). Previews wait for no song (see the module's doc).
        workers = max(1, self.workers_serving(model))
        busy = [] if lane in preview_lanes(lanes) else self._busy(speed, lanes)
        paces = [factor for _, factor in busy] or [1.0]
        typical = sorted(paces)[len(paces) // 2]
        free = (sorted(busy) + [(0.0, typical)] * workers)[:workers]
        heapq.heapify(free)
        lengths = []
        for name, seconds, work_ahead in self._fields(ahead, "model", "seconds", "work"):
            at, factor = heapq.heappop(free)
            lengths.append(duration(name, float(work_ahead or seconds or 0), factor))
            heapq.heappush(free, (at + lengths[-1], factor))
        start, factor = heapq.heappop(free)
        if beyond and lengths:
            start += beyond * (sum(lengths) / len(lengths)) / workers
        return start + duration(model, work, factor)

    def _busy(self, speed, lanes: tuple[str, ...]) -> list[tuple[float, float]]:
        """(seconds until it is done, its worker's pace) for each job of `lanes` (an engine's) being separated now."""
        taken = self.redis.zrange(self.queue.entries.key("taken"), 0, 63)
        fields = self._fields(taken, "model", "seconds", "work", "result", "lane")
        kept = [(entry, row[:4]) for entry, row in zip(taken, fields, strict=True) if row[4] in lanes]
        taken, fields = [entry for entry, _ in kept], [row for _, row in kept]
        with self.redis.pipeline(transaction=False) as pipe:
            for *_, result in fields:
                pipe.hmget(f"status:{result or '-'}", "progress", "processing_at", "job_id", "running_at",
                           "progress_at")
            statuses = pipe.execute()
        busy = []
        for (model, seconds, work, _), entry, status in zip(fields, taken, statuses, strict=True):
            work = float(work or seconds or 0)
            if status[2] != entry or status[1] is None:
                busy.append((speed(model).seconds(work), 1.0))
                continue
            busy.append(self._running(speed(model), work, float(status[0] or 0), float(status[1]),
                                      float(status[3]) if status[3] else None,
                                      float(status[4]) if status[4] else None))
        return busy

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
