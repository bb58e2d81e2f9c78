"""The worker queue `toWorker`: JSON jobs in, taken in fair turns, reliably, by workers.

Jobs enter as the reference's did, pushed onto the Redis list `toWorker` (by the APIs, or by a script). Admission
moves each into the reliable queue (msaas/reliable.py) with its turn: previews in their own lane, taken first, in
the order they came; every other job in the normal lane, by start-time fair queuing over tenants (Goyal et al.,
SFQ): a job's turn is max(the turn last taken, its tenant's last finish), and its tenant's finish grows by the
song's seconds over the tenant's weight. So a tenant's backlog never holds another's song back by more than the
songs already running, and tenants with backlogs share the workers' audio seconds by their weights. Admission,
turns and taking are O(log n) in the jobs queued; positions are a rank, never a walk down the queue.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass

import redis

from msaas import engines
from msaas.errors import InvalidJob
from msaas.jobs import OPEN_TENANT, Job
from msaas.reliable import LIB, Reaped, ReliableQueue, Taken

ADMIT_BATCH = 100  # jobs admitted per call: a flood of scripted pushes is admitted over several takes
# Moves up to ARGV[2] jobs from the list `q` into the lanes (see the module's doc). A job's id is its `id` when that
# is a plain name, else the SHA-1 of its text, so pushing the same job twice admits it once.
ADMIT = engines.lua_tables() + """
local function admit(q, limit, default_model)
  for _ = 1, limit do
    local raw = redis.call('RPOP', q)
    if not raw then return end
    local ok, job = pcall(cjson.decode, raw)
    if not ok or type(job) ~= 'table' then job = {} end
    local id = job.id
    if type(id) ~= 'string' or #id > 64 or not string.match(id, '^[%w_-]+$') then id = redis.sha1hex(raw) end
    local tenant = job.tenant
    if type(tenant) ~= 'string' or tenant == '' then tenant = '""" + OPEN_TENANT + """' end
    local seconds = tonumber(type(job.seconds) == 'number' and job.seconds or 0) or 0
    local model = type(job.model) == 'string' and job.model or (default_model or '')
    -- each engine its lanes and its fair turns (msaas/engines.py); a song weighs its seconds times its model's cost
    local engine = ENGINE[model] or 'demucs'
    local prefix = engine == 'demucs' and '' or (engine .. ':')
    local lane, order = prefix .. 'normal', 0
    if job.lane == 'preview' then
      lane, order = prefix .. 'preview', redis.call('INCR', qkey(q, 'arrivals'))
    else
      local weight = tonumber(redis.call('HGET', qkey(q, 'weights'), tenant) or '1') or 1
      local finish = engine == 'demucs' and 'finish' or ('finish:' .. engine)
      local start = math.max(tonumber(redis.call('GET', qkey(q, 'front:' .. lane)) or '0'),
                             tonumber(redis.call('HGET', qkey(q, finish), tenant) or '0'))
      order = start
      redis.call('HSET', qkey(q, finish), tenant, start + math.max(seconds, 1) * (COST[model] or 1) / weight)
    end
    local work = tonumber(type(job.work) == 'number' and job.work or seconds) or seconds
    push(q, id, raw, lane, order, {'tenant', tenant, 'seconds', seconds, 'model', model, 'work', work})
  end
end
"""
# ARGV: q, worker, lease in ms, the default model, then the lanes the worker serves in the order it takes them.
TAKE = LIB + ADMIT + "admit(ARGV[1], " + str(ADMIT_BATCH) + ", ARGV[4]) " + \
    "return take(ARGV[1], ARGV[2], tonumber(ARGV[3]), {unpack(ARGV, 5)})"
ADMIT_ONLY = LIB + ADMIT + "admit(ARGV[1], tonumber(ARGV[2]), ARGV[3]) return 1"


@dataclass(frozen=True)
class Delivery:
    """A job taken off the queue: the entry (its token fences every write for it) and the job, if it decodes."""

    taken: Taken
    job: Job | None
    error: str | None = None

    @property
    def attempts(self) -> int:
        """Attempts that ended without a result before this one."""
        return self.taken.attempts


@dataclass(frozen=True)
class DeadLetter:
    """A job that will not be retried, as an operator inspects it."""

    id: str
    job: str  # the job's JSON, as it was queued
    reason: str
    attempts: int
    last_worker: str
    buried_at: float  # seconds since the epoch
    tenant: str

    def as_json(self) -> dict:
        """The letter as both APIs and the CLI show it."""
        try:
            job = json.loads(self.job)
        except ValueError:
            job = None
        songhash = job.get("songhash", job.get("hash")) if isinstance(job, dict) else None
        return {"id": self.id, "songhash": songhash if isinstance(songhash, str) else None, "reason": self.reason,
                "attempts": self.attempts, "last_worker": self.last_worker, "tenant": self.tenant,
                "buried_at": datetime.datetime.fromtimestamp(self.buried_at, datetime.UTC).isoformat(
                    timespec="milliseconds"), "job": self.job}


class JobQueue:
    def __init__(self, connection: redis.Redis, name: str, default_model: str) -> None:
        self.redis = connection
        self.name = name
        self.default_model = default_model  # for entries that name no model (pushed by a script)
        self.entries = ReliableQueue(connection, name, engines.ALL_LANES)
        self.turns = 0  # rotates the normal lanes of a worker serving several engines, so none starves
        self._take = connection.register_script(TAKE)
        self._admit = connection.register_script(ADMIT_ONLY)

    def push(self, job: Job, pipeline: redis.client.Pipeline | None = None) -> None:
        """The one way onto the queue: onto the list `toWorker`, then admitted at once (in the caller's transaction,
        with `pipeline`)."""
        client = pipeline or self.redis
        client.lpush(self.name, job.to_json())
        self._admit(args=[self.name, ADMIT_BATCH, self.default_model], client=client)

    def decode(self, raw: str) -> Job:
        return Job.from_json(raw, self.default_model)

    def take(self, worker: str, lease_seconds: float, lanes: tuple[str, ...] = engines.ALL_LANES) -> Delivery | None:
        """The next job in turn from `lanes` (the worker's engines': msaas/engines.py), held by `worker` for
        `lease_seconds` unless renewed; None if none is queued."""
        previews = [lane for lane in lanes if lane.endswith("preview")]
        normal = [lane for lane in lanes if not lane.endswith("preview")]
        self.turns += 1
        turn = self.turns % max(1, len(normal))
        order = [*previews, *normal[turn:], *normal[:turn]]
        taken = self._take(args=[self.name, worker, int(lease_seconds * 1000), self.default_model, *order])
        if not taken:
            return None
        taken = Taken(taken[0], taken[1], taken[2], int(taken[3] or 0))
        try:
            return Delivery(taken, self.decode(taken.body))
        except InvalidJob as error:
            return Delivery(taken, None, error.message)

    def previews_waiting(self, lanes: tuple[str, ...] = engines.ALL_LANES) -> bool:
        """A preview waits in one of `lanes`' preview lanes (a counter read each: a busy worker asks every second)."""
        with self.redis.pipeline(transaction=False) as pipe:
            for name in engines.preview_lanes(lanes):
                pipe.zcard(self.entries.key(f"lane:{name}"))
            return any(pipe.execute())

    def wait(self, timeout: float) -> None:
        self.entries.wait(timeout)

    def renew(self, delivery: Delivery, lease_seconds: float) -> bool:
        return self.entries.renew(delivery.taken, lease_seconds)

    def holds(self, delivery: Delivery) -> bool:
        """Whether this delivery is still the job's current one (not cancelled, reaped or finished elsewhere)."""
        return self.entries.holds(delivery.taken)

    def bury(self, delivery: Delivery, reason: str) -> bool:
        return self.entries.bury(delivery.taken, reason)

    def remove(self, job_id: str, pipeline: redis.client.Pipeline | None = None) -> None:
        self.entries.remove(job_id, pipeline)

    def reap(self, max_attempts: int) -> list[Reaped]:
        return self.entries.reap(max_attempts)

    def position(self, job_id: str) -> int | None:
        """1 for the next taken by a worker of its engine; None if it is not waiting."""
        lane = self.entries.fields(job_id, "lane")[0]
        return self.entries.position(job_id, engines.lanes_of(lane)) if lane else None

    def depths(self) -> dict[str, int]:
        """Jobs waiting (every lane), delayed for a retry, being separated, and dead: counters, not walks."""
        counts = self.entries.counts()
        waiting = sum(counts.pop(f"lane:{lane}") for lane in self.entries.lanes)
        return {"waiting": waiting + self.redis.llen(self.name), **counts}

    def waiting_by_engine(self) -> dict[str, int]:
        """Jobs waiting in each engine's lanes ("demucs", "roformer", "roformer+demucs"): what a pool serving that
        engine would take (the scalers of deploy/components/keda-gpu); one ZCARD a lane."""
        counts = self.entries.counts()
        return {engine: sum(counts[f"lane:{engines.lane(engine, kind)}"] for kind in engines.LANE_KINDS)
                for engine in engines.ENGINE_SETS}

    def dead_letters(self, after: tuple[float, str] | None = None, limit: int = 50) -> list[DeadLetter]:
        rows = self.entries.page("dead", after, limit)
        return [letter for entry_id, _ in rows if (letter := self.dead_letter(entry_id)) is not None]

    def dead_letter(self, entry_id: str) -> DeadLetter | None:
        body, reason, attempts, holder, buried, tenant = self.entries.fields(
            entry_id, "body", "reason", "attempts", "last_holder", "buried_at", "tenant")
        if body is None or buried is None:
            return None
        return DeadLetter(entry_id, body, reason or "", int(attempts or 0), holder or "", int(buried) / 1000,
                          tenant or OPEN_TENANT)

    def revive(self, entry_id: str) -> bool:
        """A dead job back in its turn, its attempts forgotten; False if it is not dead."""
        return self.entries.revive(entry_id)

    def purge(self, entry_id: str) -> bool:
        """Forget a dead job for good; False if it is not dead."""
        if self.redis.zscore(self.entries.key("dead"), entry_id) is None:
            return False
        return self.entries.remove(entry_id)
