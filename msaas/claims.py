"""Tenants' claims on results, as the APIs change them: submit, cancel, remove, and what a tenant may see.

Identical uploads from two tenants are separated once: the result (its status, its tracks) is shared, and each
tenant holds a claim on it. A tenant sees, downloads and removes only results it claims; another tenant's result
answers exactly as an unknown one. Cancelling or removing drops the tenant's claim; the job stops, and the objects
go, only when the last claim goes. Each step is one Lua script over the records of msaas/records.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from msaas.jobqueue import ADMIT, ADMIT_BATCH, JobQueue
from msaas.jobs import Callback, Job
from msaas.records import (
    CANCELLED,
    CANCELLED_KEPT,
    DONE,
    LUA,
    active_key,
    claim_key,
    owners_key,
    results_key,
    status_key,
    today,
    usage_key,
)
from msaas.reliable import LIB, page

# ARGV: q, tenant, result, songhash, job JSON, job id, options, seconds, callback JSON or '', the tenant's weight.
# The tenant's claim, and the job queued unless the result is queued, processing or done: one step, so two identical
# submissions never queue twice. Returns {state before (or ''), 1 if the claim is new, 1 if the callback was taken}.
SUBMIT = LIB + ADMIT + LUA + f"""
local q, t, r, songhash, job, job_id = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local callback = ARGV[9]
local state = redis.call('HGET', skey(r), 'state') or ''
local new = redis.call('SADD', okey(r), t)
redis.call('SADD', rkey(songhash), r)
if redis.call('HGET', ckey(t, r), 'state') == '{CANCELLED}' then redis.call('DEL', ckey(t, r)) end
redis.call('PERSIST', ckey(t, r))
redis.call('HSETNX', ckey(t, r), 'submitted_at', now_s())
-- a done result one of whose tracks was removed is no longer whole: it is separated again
if state == '{DONE}' and (redis.call('HGET', skey(r), 'removed') or '') ~= '' then state = 'partial' end
local queued = not (is_active(state) or state == '{DONE}')
if queued then
  redis.call('HSET', qkey(q, 'weights'), t, ARGV[10])
  redis.call('LPUSH', q, job)
  admit(q, {ADMIT_BATCH})
  redis.call('DEL', skey(r))
  set_state(r, 'queued', '', {{'job_id', job_id, 'attempts', 0, 'options', ARGV[7], 'seconds', ARGV[8], 'tenant', t}})
end
if state ~= '{DONE}' then redis.call('ZADD', akey(t), 'NX', now_s(), r) end
local took = 0
local registered = redis.call('HGET', ckey(t, r), 'callback_state')
if callback ~= '' and state ~= '{DONE}' and (not registered or registered == 'delivered' or registered == 'failed') then
  redis.call('HDEL', ckey(t, r), 'callback_attempts', 'callback_outcome', 'callback_delivered', 'callback_job')
  redis.call('HSET', ckey(t, r), 'callback', callback, 'callback_state', 'waiting')
  took = 1
end
return {{state, new, took}}
"""

# ARGV: q, tenant, result. Drop the tenant's claim on an active result; the job stops if no claim is left. Returns
# the state it was in ('' if the tenant had no active claim on it).
CANCEL = LIB + LUA + f"""
local q, t, r = ARGV[1], ARGV[2], ARGV[3]
local state, job_id = unpack(redis.call('HMGET', skey(r), 'state', 'job_id'))
if redis.call('SISMEMBER', okey(r), t) == 0 or not is_active(state) then return '' end
cancel_claim(t, r)
if redis.call('SCARD', okey(r)) == 0 then
  remove(q, job_id)
  redis.call('HDEL', skey(r), 'progress', 'worker')
  set_state(r, '{CANCELLED}', 'cancelled by a client')
  redis.call('EXPIRE', skey(r), {CANCELLED_KEPT})
end
return state
"""

# ARGV: q, tenant, songhash. Drop every claim of the tenant on the song's results (cancelling the active ones), and
# what it kept of those it cancelled.
# Returns {claims dropped, active ones cancelled, results no tenant claims any more (their tracks to remove), and
# whether any result of the song is still claimed}.
REMOVE = LIB + LUA + f"""
local q, t, songhash = ARGV[1], ARGV[2], ARGV[3]
local dropped, cancelled, orphans = 0, 0, {{}}
for _, r in ipairs(redis.call('SMEMBERS', rkey(songhash))) do
  if redis.call('SISMEMBER', okey(r), t) == 1 then
    dropped = dropped + 1
    local state, job_id, published = unpack(redis.call('HMGET', skey(r), 'state', 'job_id', 'published'))
    if is_active(state) then
      cancelled = cancelled + 1
      cancel_claim(t, r)
    else
      redis.call('SREM', okey(r), t)
      redis.call('DEL', ckey(t, r))
    end
    if redis.call('SCARD', okey(r)) == 0 then
      table.insert(orphans, r)
      table.insert(orphans, published or '')
      if is_active(state) then
        remove(q, job_id)
        redis.call('HDEL', skey(r), 'progress', 'worker')
        set_state(r, '{CANCELLED}', 'cancelled by a client')
        redis.call('EXPIRE', skey(r), {CANCELLED_KEPT})
      else
        redis.call('DEL', skey(r))
      end
      redis.call('SREM', rkey(songhash), r)
    end
  elseif redis.call('HGET', ckey(t, r), 'state') == '{CANCELLED}' then
    dropped = dropped + 1  -- what the tenant still sees of it: that it cancelled it
    redis.call('DEL', ckey(t, r))
  end
end
local claimed = 0
for _, r in ipairs(redis.call('SMEMBERS', rkey(songhash))) do
  if redis.call('SCARD', okey(r)) > 0 then claimed = 1 end
end
return {{dropped, cancelled, orphans, claimed}}
"""

# ARGV: tenant, result, track. A track removed by the result's only claimant (its object is gone): the status keeps
# the result, less that track, and a new submission separates it again. Claimed by others too: only this tenant's
# claim goes. Returns 'sole', 'shared' or '' (not this tenant's).
DROP_TRACK = LUA + """
local t, r, track = ARGV[1], ARGV[2], ARGV[3]
if redis.call('SISMEMBER', okey(r), t) == 0 then return '' end
if redis.call('SCARD', okey(r)) > 1 then
  redis.call('SREM', okey(r), t)
  redis.call('ZREM', akey(t), r)
  redis.call('DEL', ckey(t, r))
  return 'shared'
end
local removed = redis.call('HGET', skey(r), 'removed') or ''
if not string.find(',' .. removed .. ',', ',' .. track .. ',', 1, true) then
  redis.call('HSET', skey(r), 'removed', removed == '' and track or removed .. ',' .. track)
end
return 'sole'
"""


@dataclass(frozen=True)
class View:
    """A result as one tenant may see it: the shared status, and the tenant's own claim (its callback)."""

    status: dict[str, str]
    claim: dict[str, str]


@dataclass(frozen=True)
class Removed:
    claims: int  # results of the song the tenant no longer claims
    cancelled: int  # of which were queued or processing
    orphans: list[tuple[str, str]]  # (result, published token) of results nobody claims now: their tracks go
    song_claimed: bool  # another tenant still claims a result of the song: its input stays


class Claims:
    def __init__(self, connection: redis.Redis, queue: JobQueue) -> None:
        self.redis = connection
        self.queue = queue
        self._scripts = {name: connection.register_script(source) for name, source in (
            ("submit", SUBMIT), ("cancel", CANCEL), ("remove", REMOVE), ("drop_track", DROP_TRACK))}

    def submit(self, tenant: str, job: Job, callback: Callback | None, weight: float = 1.0) -> tuple[str, bool, bool]:
        """Claim the job's result for `tenant`, queueing the job (its turn by the tenant's `weight`) unless the result
        is active or done: (state it was in, '' if none; whether the claim is new; whether this callback was
        registered)."""
        state, new, took = self._scripts["submit"](args=[
            self.queue.name, tenant, job.result.id, job.songhash, job.to_json(), job.id,
            json.dumps(job.options.as_fields()), job.seconds, json.dumps(vars(callback)) if callback else "",
            repr(float(weight))])
        return state, bool(new), bool(took)

    def view(self, tenant: str, result: str) -> View | None:
        """The result as `tenant` sees it; None if it is not the tenant's (never submitted, or another tenant's)."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(status_key(result))
            pipe.sismember(owners_key(result), tenant)
            pipe.hgetall(claim_key(tenant, result))
            status, owned, claim = pipe.execute()
        if owned and status:
            return View(status, claim)
        if claim.get("state") == CANCELLED:  # the tenant cancelled it; others may still have it separated
            return View({"state": CANCELLED, "reason": "cancelled by a client",
                         "cancelled_at": claim.get("cancelled_at", "0"), "job_id": ""}, {})
        return None

    def status(self, result: str) -> dict[str, str]:
        """The result's shared status, whoever's it is (for the APIs' own decisions, never shown as is)."""
        return self.redis.hgetall(status_key(result))

    def states(self, results: list[str]) -> list[tuple[str | None, str | None, str | None]]:
        """(state, job id, options) of each result, in one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            for result in results:
                pipe.hmget(status_key(result), "state", "job_id", "options")
            return [tuple(row) for row in pipe.execute()]

    def owns(self, tenant: str, result: str) -> bool:
        return bool(self.redis.sismember(owners_key(result), tenant))

    def sole_owner(self, tenant: str, result: str) -> bool:
        members = self.redis.smembers(owners_key(result))
        return members == {tenant}

    def forget_done(self, result: str) -> bool:
        """Forget that a result is done, its tracks being gone, so a new submission separates it again; a result
        queued or processing meanwhile is left alone (one step)."""
        return bool(self.redis.eval(
            "if redis.call('hget', KEYS[1], 'state') == ARGV[1] then return redis.call('del', KEYS[1]) end return 0",
            1, status_key(result), DONE))

    def results_of(self, tenant: str, songhash: str) -> list[str]:
        """The song's results the tenant claims: one set read and one membership test each, whatever else is stored."""
        results = sorted(self.redis.smembers(results_key(songhash)))
        if not results:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for result in results:
                pipe.sismember(owners_key(result), tenant)
            return [result for result, owned in zip(results, pipe.execute(), strict=True) if owned]

    def cancel(self, tenant: str, result: str) -> str:
        return self._scripts["cancel"](args=[self.queue.name, tenant, result])

    def remove(self, tenant: str, songhash: str) -> Removed:
        claims, cancelled, orphans, claimed = self._scripts["remove"](args=[self.queue.name, tenant, songhash])
        pairs = list(zip(orphans[::2], orphans[1::2], strict=True))
        return Removed(int(claims), int(cancelled), pairs, bool(claimed))

    def drop_track(self, tenant: str, result: str, track: str) -> str:
        return self._scripts["drop_track"](args=[tenant, result, track])

    def active(self, tenant: str, after: tuple[float, str] | None, limit: int) -> list[tuple[str, float]]:
        """The tenant's queued and processing results, in the order submitted, a page at a time."""
        return page(self.redis, active_key(tenant), after, limit)

    def active_count(self, tenant: str) -> int:
        return self.redis.zcard(active_key(tenant))

    def record_callback(self, tenant: str, result: str, job_id: str, fields: dict[str, str | int],
                        pipeline: redis.client.Pipeline | None = None) -> None:
        """Set a callback's outcome on the claim it was queued for (if it is still that job's)."""
        (pipeline or self.redis).eval(
            "if redis.call('hget', KEYS[1], 'callback_job') ~= ARGV[1] then return 0 end "
            "for i = 2, #ARGV, 2 do redis.call('hset', KEYS[1], ARGV[i], ARGV[i + 1]) end return 1",
            1, claim_key(tenant, result), job_id, *(str(item) for pair in fields.items() for item in pair))

    def count_song(self, tenant: str, seconds: float) -> None:
        """A new claim: one song, and its seconds against today's audio (msaas/tenants.py's daily limit)."""
        day = usage_key(tenant, today())
        with self.redis.pipeline() as pipe:
            pipe.hincrby(usage_key(tenant), "songs", 1)
            pipe.incrbyfloat(day, seconds)
            pipe.expire(day, 2 * 86400)
            pipe.execute()

    def audio_today(self, tenant: str) -> float:
        return float(self.redis.get(usage_key(tenant, today())) or 0)

    def usage(self, tenant: str) -> dict[str, float]:
        fields = self.redis.hgetall(usage_key(tenant))
        return {name: float(fields.get(name, 0)) for name in ("songs", "audio_seconds", "cpu_seconds")}
