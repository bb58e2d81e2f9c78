"""Where each result stands, as its worker moves it: every step an attempt takes is fenced.

A worker's step (start, progress, ready, publish, retry, hand back, fail) is one Lua script that first checks that the
attempt still holds its job (msaas/reliable.py: the entry's token is the attempt's) and that the status is its
job's, and only then changes the status and moves the queue entry, together. An attempt that lost its job (its lease
ran out while it was paused, the job was cancelled, or another delivery of it finished first) changes nothing: its
worker hears False and removes what it wrote, under its own attempt's names (msaas/naming.py), and nothing else.
The layout of the records is msaas/records.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from msaas.jobqueue import Delivery, JobQueue
from msaas.records import ACTIVE, CANCELLED, DONE, FAILED, LUA, PROCESSING, QUEUED, STATES, status_key
from msaas.reliable import LIB, Reaped

__all__ = ["ACTIVE", "CANCELLED", "DONE", "FAILED", "PROCESSING", "QUEUED", "STATES", "SongStatus", "Started"]

# A step counts while the attempt holds its entry and the status is its job's (a script's job: no one's yet).
FENCE = """
local function current(q, job_id, token, r)
  if not holds(q, job_id, token) then return false end
  local owner = redis.call('HGET', skey(r), 'job_id')
  return owner == false or owner == job_id
end
"""

# ARGV: q, job_id, token, result, songhash, worker, tenant, options, seconds, callback JSON or ''.
START = LIB + LUA + FENCE + f"""
local q, job_id, token, r, songhash, worker, tenant = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
if not holds(q, job_id, token) then return 'lost' end
local state, owner = unpack(redis.call('HMGET', skey(r), 'state', 'job_id'))
if owner and owner ~= job_id and (is_active(state) or state == '{DONE}') then
  ack(q, job_id)
  return 'duplicate'
end
if owner == job_id and (state == '{CANCELLED}' or state == '{DONE}') then
  ack(q, job_id)
  return state
end
redis.call('HSET', entry(q, job_id), 'result', r)
if not owner then
  -- a job pushed by a script: its tenant claims it, so the APIs show it
  redis.call('SADD', okey(r), tenant)
  redis.call('SADD', rkey(songhash), r)
  redis.call('ZADD', akey(tenant), 'NX', now_s(), r)
  redis.call('HSET', skey(r), 'options', ARGV[8], 'seconds', ARGV[9], 'tenant', tenant)
  if ARGV[10] ~= '' and not redis.call('HGET', ckey(tenant, r), 'callback') then
    redis.call('HSET', ckey(tenant, r), 'callback', ARGV[10], 'callback_state', 'waiting')
  end
end
local attempts = tonumber(redis.call('HGET', entry(q, job_id), 'attempts') or '0') + 1
redis.call('HDEL', skey(r), 'published', 'running_at', 'progress_at')
set_state(r, '{PROCESSING}', '', {{'worker', worker, 'job_id', job_id, 'attempts', attempts, 'progress', 0,
                                  'token', token, 'ready', 0}})
redis.call('PERSIST', skey(r))
return 'started'
"""

# The first progress (Demucs drew its first bar, at 0%) also notes when its run got going (`running_at`), and each
# new percentage when it was reached (`progress_at`; the worker repeats an unchanged one every second): the
# estimates' pace is the time the progress took, not the time since the run began (msaas/eta.py).
PROGRESS = LIB + LUA + FENCE + """
if not current(ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return 0 end
local now = now_s()
if redis.call('HGET', skey(ARGV[4]), 'progress') ~= ARGV[5] then
  redis.call('HSET', skey(ARGV[4]), 'progress', ARGV[5], 'progress_at', now)
end
redis.call('HSETNX', skey(ARGV[4]), 'running_at', now)
return 1
"""

# ARGV: q, job_id, token, result, frames. The attempt's tracks are ready up to `frames` (it only grows): the status
# names them (by the attempt's token and that length) only while this attempt is the job's and processing.
READY = LIB + LUA + FENCE + f"""
if not current(ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return 0 end
local state, token, frames = unpack(redis.call('HMGET', skey(ARGV[4]), 'state', 'token', 'ready'))
if state ~= '{PROCESSING}' or token ~= ARGV[3] then return 0 end
if tonumber(ARGV[5]) > tonumber(frames or '0') then redis.call('HSET', skey(ARGV[4]), 'ready', ARGV[5]) end
return 1
"""

# ARGV: q, callback queue, job_id, token, result, songhash, worker, expire_in, tenant, audio s, cpu s, reconstruction
# dB ('': not measured).
PUBLISH = LIB + LUA + FENCE + f"""
local q, cbq, job_id, token, r, songhash = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
-- sent again after its answer was lost (a client's retry): it ran, and says so
local state, published, owner = unpack(redis.call('HMGET', skey(r), 'state', 'published', 'job_id'))
if state == '{DONE}' and published == token and owner == job_id then return 1 end
if not current(q, job_id, token, r) or redis.call('HGET', skey(r), 'state') ~= '{PROCESSING}' then return 0 end
set_state(r, '{DONE}', '', {{'published', token, 'progress', 100, 'worker', ARGV[7], 'reconstruction_db', ARGV[12]}})
if tonumber(ARGV[8]) > 0 then redis.call('EXPIRE', skey(r), ARGV[8]) end
ack(q, job_id)
deactivate(r)
local now = now_ms()
for _, t in ipairs(redis.call('SMEMBERS', okey(r))) do
  local callback, state = unpack(redis.call('HMGET', ckey(t, r), 'callback', 'callback_state'))
  if callback and state == 'waiting' then
    local due = cjson.encode({{result = r, songhash = songhash, event_id = job_id, tenant = t,
                              callback = cjson.decode(callback)}})
    push(cbq, job_id .. '-' .. t, due, 'default', now, {{}})
    redis.call('HSET', ckey(t, r), 'callback_state', 'pending', 'callback_job', job_id, 'callback_attempts', 0,
               'callback_outcome', 'pending', 'callback_delivered', 'false')
  end
end
redis.call('HINCRBYFLOAT', ukey(ARGV[9]), 'audio_seconds', ARGV[10])
redis.call('HINCRBYFLOAT', ukey(ARGV[9]), 'cpu_seconds', ARGV[11])
return 1
"""

# ARGV: q, job_id, token, result, state (queued: released, or failed: buried), reason, delay ms, counted.
SETTLE = LIB + LUA + FENCE + f"""
local q, job_id, token, r, state, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if not current(q, job_id, token, r) then return 0 end
redis.call('HDEL', skey(r), 'worker', 'progress')
set_state(r, state, reason)
if state == '{FAILED}' then
  -- the attempt that failed counts, as a reaped one does: a letter shows every attempt made
  if ARGV[8] == '1' then redis.call('HINCRBY', entry(q, job_id), 'attempts', 1) end
  bury(q, job_id, reason)
  deactivate(r)
else
  release(q, job_id, tonumber(ARGV[7]), ARGV[8] == '1')
end
return 1
"""

# ARGV: q, max attempts. The queue's reap, with the status of each job it moved.
REAP = LIB + LUA + f"""
local function reaped(id, holder, outcome, attempts)
  local r = redis.call('HGET', entry(ARGV[1], id), 'result')
  if not r or redis.call('HGET', skey(r), 'job_id') ~= id then return end
  redis.call('HDEL', skey(r), 'worker', 'progress')
  if outcome == 'dead' then
    set_state(r, '{FAILED}', redis.call('HGET', entry(ARGV[1], id), 'reason'))
    deactivate(r)
  else
    set_state(r, '{QUEUED}', 'requeued: worker ' .. holder .. ' stopped answering')
  end
end
return reap(ARGV[1], tonumber(ARGV[2]), reaped)
"""

# ARGV: q, id. A dead job back in its turn, its attempts forgotten, and its result queued again, unless the result
# was queued again meanwhile (by another job): 'revived', 'conflict' or 'missing'.
REVIVE = LIB + LUA + f"""
local q, id = ARGV[1], ARGV[2]
if not redis.call('ZSCORE', qkey(q, 'dead'), id) then return 'missing' end
local r = redis.call('HGET', entry(q, id), 'result')
local state, owner
if r then
  state, owner = unpack(redis.call('HMGET', skey(r), 'state', 'job_id'))
  if owner and owner ~= id and (is_active(state) or state == '{DONE}') then return 'conflict' end
end
redis.call('ZREM', qkey(q, 'dead'), id)
redis.call('HDEL', entry(q, id), 'reason', 'buried_at', 'last_holder')
redis.call('HSET', entry(q, id), 'attempts', 0)
ready(q, id)
if r and (owner == id or not owner) then
  set_state(r, '{QUEUED}', 'requeued by an operator', {{'attempts', 0}})
  for _, t in ipairs(redis.call('SMEMBERS', okey(r))) do redis.call('ZADD', akey(t), 'NX', now_s(), r) end
end
return 'revived'
"""


@dataclass(frozen=True)
class Started:
    """What `start` found: "started", or why the attempt is not to run ("cancelled", "done", "duplicate": the job
    was dropped; "lost": this delivery is no longer the job's)."""

    outcome: str

    @property
    def started(self) -> bool:
        return self.outcome == "started"


class SongStatus:
    def __init__(self, connection: redis.Redis, queue: JobQueue, callback_queue: str) -> None:
        self.redis = connection
        self.queue = queue
        self.callback_queue = callback_queue
        self._scripts = {name: connection.register_script(source) for name, source in (
            ("start", START), ("progress", PROGRESS), ("ready", READY), ("publish", PUBLISH), ("settle", SETTLE),
            ("reap", REAP), ("revive", REVIVE))}

    def _run(self, name: str, *args: object):
        return self._scripts[name](args=[str(arg) for arg in args])

    def get(self, result: str) -> dict[str, str]:
        """The result's fields, empty if the service has never seen it."""
        return self.redis.hgetall(status_key(result))

    def start(self, delivery: Delivery, worker: str) -> Started:
        job, taken = delivery.job, delivery.taken
        callback = json.dumps(vars(job.callback)) if job.callback is not None else ""
        return Started(self._run("start", self.queue.name, taken.id, taken.token, job.result.id, job.songhash, worker,
                                 job.tenant, json.dumps(job.options.as_fields()), job.seconds, callback))

    def progress(self, delivery: Delivery, percent: float) -> bool:
        taken = delivery.taken
        return bool(self._run("progress", self.queue.name, taken.id, taken.token, delivery.job.result.id,
                              f"{percent:.0f}"))

    def ready(self, delivery: Delivery, frames: int) -> bool:
        """The attempt's tracks are stored up to `frames` (under `Result.ready_key`); False if it lost its job."""
        taken = delivery.taken
        return bool(self._run("ready", self.queue.name, taken.id, taken.token, delivery.job.result.id, frames))

    def publish(self, delivery: Delivery, worker: str, expire_in: int | None, audio_seconds: float,
                cpu_seconds: float, reconstruction_db: float | None = None) -> bool:
        """Done: the attempt's tracks are the result's, its callbacks queued and its job acknowledged, in one
        step; False (and nothing changed) if the attempt no longer holds the job."""
        job, taken = delivery.job, delivery.taken
        return bool(self._run("publish", self.queue.name, self.callback_queue, taken.id, taken.token, job.result.id,
                              job.songhash, worker, expire_in or 0, job.tenant, f"{audio_seconds:.3f}",
                              f"{cpu_seconds:.3f}", "" if reconstruction_db is None else f"{reconstruction_db:.2f}"))

    def retry(self, delivery: Delivery, reason: str, delay: float, counted: bool = True) -> bool:
        """Queued again (after `delay` seconds), saying why; `counted`: the attempt counts towards the limit."""
        return self._settle(delivery, QUEUED, reason, delay, counted)

    def fail(self, delivery: Delivery, reason: str) -> bool:
        """Failed for good: the job goes to the dead letters with `reason`."""
        return self._settle(delivery, FAILED, reason, 0.0, True)

    def _settle(self, delivery: Delivery, state: str, reason: str, delay: float, counted: bool) -> bool:
        taken = delivery.taken
        return bool(self._run("settle", self.queue.name, taken.id, taken.token, delivery.job.result.id, state,
                              reason, int(delay * 1000), "1" if counted else "0"))

    def reap(self, max_attempts: int) -> list[Reaped]:
        """Requeue the jobs whose lease ran out (their status says so), or bury them past `max_attempts`."""
        return [Reaped(*row) for row in self._run("reap", self.queue.name, max_attempts)]

    def revive(self, job_id: str) -> str:
        """An operator's retry of a dead job: "revived", "conflict" (its result was queued again since) or
        "missing" (not a dead job)."""
        return self._run("revive", self.queue.name, job_id)
