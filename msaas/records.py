"""Where the records of results live in Redis, named once for Python and for the Lua scripts that change them.

A result (a song separated with given options, msaas/naming.py) has one status hash, shared by every tenant that
submitted it; each tenant's claim on it is its own (when it submitted, its callback, whether it cancelled):

    status:<result>          hash: state, reason, <state>_at, job_id, attempts, options, seconds, worker, progress,
                             published (the token of the attempt whose tracks are served), tenant (who queued it),
                             token and ready (the running attempt's token, and the frames of its tracks ready)
    owners:<result>          set: the tenants that hold a claim (see it, download it, may remove it)
    claim:<tenant>:<result>  hash: submitted_at, callback, callback_state/attempts/outcome/delivered, or
                             state=cancelled for a day after the tenant cancelled
    results:<songhash>       set: the song's results (so removing a song reads no keyspace)
    active:<tenant>          sorted set: the tenant's queued and processing results, by submission time
    usage:<tenant>           hash: songs, audio_seconds, cpu_seconds; usage:<tenant>:<yyyymmdd>: audio accepted that day
"""

from __future__ import annotations

import time

from msaas.shapes import CANCELLED, DONE, FAILED, PROCESSING, QUEUED, STATES

__all__ = ["CANCELLED", "DONE", "FAILED", "PROCESSING", "QUEUED", "STATES"]
ACTIVE = (QUEUED, PROCESSING)
CANCELLED_KEPT = 86400  # seconds a "cancelled" status or claim is kept, so a client polling it hears why it stopped


def status_key(result: str) -> str:
    return f"status:{result}"


def owners_key(result: str) -> str:
    return f"owners:{result}"


def claim_key(tenant: str, result: str) -> str:
    return f"claim:{tenant}:{result}"


def results_key(songhash: str) -> str:
    return f"results:{songhash}"


def active_key(tenant: str) -> str:
    return f"active:{tenant}"


def usage_key(tenant: str, day: str = "") -> str:
    return f"usage:{tenant}:{day}" if day else f"usage:{tenant}"


def today(now: float | None = None) -> str:
    return time.strftime("%Y%m%d", time.gmtime(time.time() if now is None else now))


# The same names for the scripts, and the steps every script shares. A script's time is the server's (TIME).
LUA = f"""
local function skey(r) return 'status:' .. r end
local function okey(r) return 'owners:' .. r end
local function ckey(t, r) return 'claim:' .. t .. ':' .. r end
local function rkey(songhash) return 'results:' .. songhash end
local function akey(t) return 'active:' .. t end
local function ukey(t) return 'usage:' .. t end
local function now_s()
  local t = redis.call('TIME')
  return string.format('%d.%03d', t[1], math.floor(tonumber(t[2]) / 1000))
end
local function set_state(r, state, reason, extra)
  redis.call('HSET', skey(r), 'state', state, 'reason', reason, state .. '_at', now_s(), unpack(extra or {{}}))
end
local function is_active(state) return state == '{QUEUED}' or state == '{PROCESSING}' end
local function deactivate(r)
  for _, t in ipairs(redis.call('SMEMBERS', okey(r))) do redis.call('ZREM', akey(t), r) end
end
local function cancel_claim(t, r)
  redis.call('SREM', okey(r), t)
  redis.call('ZREM', akey(t), r)
  redis.call('DEL', ckey(t, r))
  redis.call('HSET', ckey(t, r), 'state', '{CANCELLED}', 'cancelled_at', now_s())
  redis.call('EXPIRE', ckey(t, r), {CANCELLED_KEPT})
end
"""
