"""The one reliable-queue primitive, under the job queue and the callback queue: entries are taken with a lease and
a fencing token, and every later step of the taker counts only while its token is still the entry's.

An entry waits in a lane (a sorted set, by its `order`), or in `delayed` until a retry is due; taking it moves it
to `taken`, scored by its lease's end, and gives it a new token from a counter that only grows. The taker renews its
lease while it works; an entry whose lease ran out is put back (`reap`), its token cleared, so a taker that was
paused (a frozen VM, a partition) and wakes after its lease can no longer acknowledge, release or otherwise write for
it: Kleppmann's fencing token, checked by the store (Redis, in one script) at every write.

Every operation is one Lua script, O(log n) in the entries held: none reads a whole lane. The scripts share the
functions in `LIB`, which the job queue and the song status compose into their own (a status change and the queue's
step in one script: msaas/status.py). Keys, for a queue named `q`: `q:lane:<lane>`, `q:delayed`, `q:taken`,
`q:dead` (sorted sets), `q:entry:<id>` (hash: body, lane, order, attempts, token, holder...), `q:fence`,
`q:front:<lane>` (the order of the last entry taken from the lane) and `q:wake` (a list takers block on).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

# Each function takes the queue's name `q` first and builds every key from it (one Redis, no cluster slots).
LIB = """
local function qkey(q, suffix) return q .. ':' .. suffix end
local function entry(q, id) return q .. ':entry:' .. id end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function holds(q, id, token)
  return token ~= nil and token ~= '' and redis.call('HGET', entry(q, id), 'token') == token
end
local function ready(q, id)
  local lane, order = unpack(redis.call('HMGET', entry(q, id), 'lane', 'order'))
  redis.call('HDEL', entry(q, id), 'token', 'holder')
  redis.call('ZADD', qkey(q, 'lane:' .. lane), order, id)
  redis.call('LPUSH', qkey(q, 'wake'), 1)
  redis.call('LTRIM', qkey(q, 'wake'), 0, 63)
end
local function push(q, id, body, lane, order, fields)
  if redis.call('EXISTS', entry(q, id)) == 1 then return 0 end
  redis.call('HSET', entry(q, id), 'body', body, 'lane', lane, 'order', order, 'attempts', 0, unpack(fields))
  ready(q, id)
  return 1
end
local function take(q, holder, lease_ms, lanes)
  local now = now_ms()
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', qkey(q, 'delayed'), '-inf', now, 'LIMIT', 0, 16)) do
    redis.call('ZREM', qkey(q, 'delayed'), id)
    ready(q, id)
  end
  for _, lane in ipairs(lanes) do
    local head = redis.call('ZPOPMIN', qkey(q, 'lane:' .. lane))
    if head[1] then
      local id = head[1]
      local token = redis.call('INCR', qkey(q, 'fence'))
      redis.call('HSET', entry(q, id), 'token', token, 'holder', holder, 'taken_at', now)
      redis.call('ZADD', qkey(q, 'taken'), now + lease_ms, id)
      local front = tonumber(redis.call('GET', qkey(q, 'front:' .. lane)) or '-inf')
      if tonumber(head[2]) > front then redis.call('SET', qkey(q, 'front:' .. lane), head[2]) end
      local body, attempts = unpack(redis.call('HMGET', entry(q, id), 'body', 'attempts'))
      return {id, tostring(token), body, attempts}
    end
  end
  return false
end
local function ack(q, id)
  redis.call('ZREM', qkey(q, 'taken'), id)
  redis.call('DEL', entry(q, id))
end
local function release(q, id, delay_ms, counted)
  redis.call('ZREM', qkey(q, 'taken'), id)
  if counted then redis.call('HINCRBY', entry(q, id), 'attempts', 1) end
  if delay_ms > 0 then
    redis.call('HDEL', entry(q, id), 'token', 'holder')
    redis.call('ZADD', qkey(q, 'delayed'), now_ms() + delay_ms, id)
  else
    ready(q, id)
  end
end
local function bury(q, id, reason)
  local now = now_ms()
  redis.call('ZREM', qkey(q, 'taken'), id)
  local holder = redis.call('HGET', entry(q, id), 'holder') or ''
  redis.call('HDEL', entry(q, id), 'token', 'holder')
  redis.call('HSET', entry(q, id), 'reason', reason, 'buried_at', now, 'last_holder', holder)
  redis.call('ZADD', qkey(q, 'dead'), now, id)
end
local function remove(q, id)
  local lane = redis.call('HGET', entry(q, id), 'lane')
  if lane then redis.call('ZREM', qkey(q, 'lane:' .. lane), id) end
  for _, set in ipairs({'delayed', 'taken', 'dead'}) do redis.call('ZREM', qkey(q, set), id) end
  return redis.call('DEL', entry(q, id))
end
local function reap(q, max_attempts, on_reaped)
  local reaped = {}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', qkey(q, 'taken'), '-inf', now_ms(), 'LIMIT', 0, 100)) do
    local holder = redis.call('HGET', entry(q, id), 'holder') or ''
    local attempts = redis.call('HINCRBY', entry(q, id), 'attempts', 1)
    local outcome = 'requeued'
    if attempts >= max_attempts then
      outcome = 'dead'
      bury(q, id, 'its worker stopped answering (its lease ran out) on each of ' .. attempts .. ' attempts')
    else
      redis.call('ZREM', qkey(q, 'taken'), id)
      ready(q, id)
    end
    if on_reaped then on_reaped(id, holder, outcome, attempts) end
    table.insert(reaped, {id, holder, outcome})
  end
  return reaped
end
"""

# Every script: ARGV[1] is the queue's name.
PUSH = LIB + "return push(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], {unpack(ARGV, 6)})"
TAKE = LIB + "return take(ARGV[1], ARGV[2], tonumber(ARGV[3]), {unpack(ARGV, 4)})"
RENEW = LIB + """
if not holds(ARGV[1], ARGV[2], ARGV[3]) then return 0 end
redis.call('ZADD', qkey(ARGV[1], 'taken'), 'XX', now_ms() + tonumber(ARGV[4]), ARGV[2])
return 1
"""
HOLDS = LIB + "return holds(ARGV[1], ARGV[2], ARGV[3]) and 1 or 0"
ACK = LIB + "if not holds(ARGV[1], ARGV[2], ARGV[3]) then return 0 end ack(ARGV[1], ARGV[2]) return 1"
RELEASE = LIB + """
if not holds(ARGV[1], ARGV[2], ARGV[3]) then return 0 end
release(ARGV[1], ARGV[2], tonumber(ARGV[4]), ARGV[5] == '1')
return 1
"""
BURY = LIB + "if not holds(ARGV[1], ARGV[2], ARGV[3]) then return 0 end bury(ARGV[1], ARGV[2], ARGV[4]) return 1"
REMOVE = LIB + "return remove(ARGV[1], ARGV[2])"
REAP = LIB + "return reap(ARGV[1], tonumber(ARGV[2]))"

# ARGV: q, id, lanes in the order they are served. Where the entry stands: 1 for the next taken; 0 if not waiting.
POSITION = LIB + """
local q, id = ARGV[1], ARGV[2]
local lane = redis.call('HGET', entry(q, id), 'lane')
if not lane then return 0 end
local before = 0
for i = 3, #ARGV do
  if ARGV[i] == lane then
    local rank = redis.call('ZRANK', qkey(q, 'lane:' .. lane), id)
    if not rank then return 0 end
    return before + rank + 1
  end
  before = before + redis.call('ZCARD', qkey(q, 'lane:' .. ARGV[i]))
end
return 0
"""

# ARGV: q, id: a dead entry back in its lane, its attempts forgotten (an operator's retry).
REVIVE = LIB + """
local q, id = ARGV[1], ARGV[2]
if not redis.call('ZSCORE', qkey(q, 'dead'), id) then return 0 end
redis.call('ZREM', qkey(q, 'dead'), id)
redis.call('HDEL', entry(q, id), 'reason', 'buried_at', 'last_holder')
redis.call('HSET', entry(q, id), 'attempts', 0)
ready(q, id)
return 1
"""


@dataclass(frozen=True)
class Taken:
    """An entry as its taker holds it: the token its writes must carry, and its attempts so far."""

    id: str
    token: str
    body: str
    attempts: int


@dataclass(frozen=True)
class Reaped:
    id: str
    holder: str  # the taker whose lease ran out
    outcome: str  # "requeued" or "dead"


class ReliableQueue:
    def __init__(self, connection: redis.Redis, name: str, lanes: tuple[str, ...] = ("default",)) -> None:
        self.redis = connection
        self.name = name
        self.lanes = lanes  # served in this order: an entry in the first is taken before any in the second
        self._scripts = {
            script: connection.register_script(source)
            for script, source in (("push", PUSH), ("take", TAKE), ("renew", RENEW), ("holds", HOLDS), ("ack", ACK),
                                   ("release", RELEASE), ("bury", BURY), ("remove", REMOVE), ("reap", REAP),
                                   ("position", POSITION), ("revive", REVIVE))
        }

    def key(self, suffix: str) -> str:
        return f"{self.name}:{suffix}"

    def entry_key(self, entry_id: str) -> str:
        return self.key(f"entry:{entry_id}")

    def script(self, name: str, *args: object, client: redis.Redis | redis.client.Pipeline | None = None):
        return self._scripts[name](args=[self.name, *args], client=client or self.redis)

    def push(self, entry_id: str, body: str, order: float, lane: str | None = None,
             fields: dict[str, object] | None = None, pipeline: redis.client.Pipeline | None = None) -> bool:
        """Add an entry unless one with this id exists (a repeated push is a no-op); `fields` are kept with it."""
        pairs = [str(item) for pair in (fields or {}).items() for item in pair]
        return bool(self.script("push", entry_id, body, lane or self.lanes[-1], repr(float(order)), *pairs,
                                client=pipeline))

    def take(self, holder: str, lease_seconds: float) -> Taken | None:
        """The next entry, now held by `holder` for `lease_seconds` unless renewed; None if none is waiting."""
        taken = self.script("take", holder, int(lease_seconds * 1000), *self.lanes)
        if not taken:
            return None
        entry_id, token, body, attempts = taken
        return Taken(entry_id, token, body, int(attempts or 0))

    def wait(self, timeout: float) -> None:
        """Block until an entry may have become ready (or `timeout` seconds pass)."""
        self.redis.blpop([self.key("wake")], timeout=max(1, round(timeout)))

    def renew(self, taken: Taken, lease_seconds: float) -> bool:
        """Extend the lease; False if it is no longer this taker's (reaped, cancelled or done elsewhere)."""
        return bool(self.script("renew", taken.id, taken.token, int(lease_seconds * 1000)))

    def holds(self, taken: Taken) -> bool:
        return bool(self.script("holds", taken.id, taken.token))

    def ack(self, taken: Taken, pipeline: redis.client.Pipeline | None = None) -> bool:
        return bool(self.script("ack", taken.id, taken.token, client=pipeline))

    def release(self, taken: Taken, delay: float = 0.0, counted: bool = True) -> bool:
        """Put the entry back, at its place in its lane, after `delay` seconds; `counted` adds an attempt."""
        return bool(self.script("release", taken.id, taken.token, int(delay * 1000), "1" if counted else "0"))

    def bury(self, taken: Taken, reason: str) -> bool:
        return bool(self.script("bury", taken.id, taken.token, reason))

    def remove(self, entry_id: str, pipeline: redis.client.Pipeline | None = None) -> bool:
        """Drop the entry wherever it is; a taker holding it fails its next fenced step."""
        return bool(self.script("remove", entry_id, client=pipeline))

    def reap(self, max_attempts: int) -> list[Reaped]:
        return [Reaped(*row) for row in self.script("reap", max_attempts)]

    def position(self, entry_id: str, lanes: tuple[str, ...] = ()) -> int | None:
        """1 for the entry taken next from `lanes` (all the queue's by default); None if it is not waiting (taken,
        delayed, dead or gone)."""
        return int(self.script("position", entry_id, *(lanes or self.lanes))) or None

    def fields(self, entry_id: str, *names: str) -> list[str | None]:
        return self.redis.hmget(self.entry_key(entry_id), names)

    def counts(self) -> dict[str, int]:
        """Entries waiting in each lane, delayed, taken and dead: one ZCARD each, whatever the queue holds."""
        with self.redis.pipeline(transaction=False) as pipe:
            names = [f"lane:{lane}" for lane in self.lanes] + ["delayed", "taken", "dead"]
            for name in names:
                pipe.zcard(self.key(name))
            return dict(zip(names, pipe.execute(), strict=True))

    def page(self, set_name: str, after: tuple[float, str] | None, limit: int) -> list[tuple[str, float]]:
        """Up to `limit` members of one of the queue's sorted sets after the cursor (order, id), in order."""
        return page(self.redis, self.key(set_name), after, limit)

    def revive(self, entry_id: str) -> bool:
        """A dead entry back in its lane with its attempts forgotten; False if it is not dead."""
        return bool(self.script("revive", entry_id))


# KEYS[1]: the set; ARGV: the cursor's score and member, the page's size. A cursor whose member has left the set
# (a song done, a letter purged) is put back for a moment to find its place: members of its score that sort after
# it are still listed (ties are common: songs queued in one millisecond, letters buried by one reap).
PAGE_AFTER = """
local key, score, member, limit = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local rank = redis.call('ZRANK', key, member)
if rank then return redis.call('ZRANGE', key, rank + 1, rank + limit, 'WITHSCORES') end
redis.call('ZADD', key, score, member)
rank = redis.call('ZRANK', key, member)
redis.call('ZREM', key, member)
return redis.call('ZRANGE', key, rank, rank + limit - 1, 'WITHSCORES')
"""


def page(connection: redis.Redis, key: str, after: tuple[float, str] | None, limit: int) -> list[tuple[str, float]]:
    """Members of a sorted set after the cursor `after` ((score, member) of the last one seen), in order, whether or
    not the cursor's member is still there; O(log n + limit)."""
    if after is None:
        return connection.zrange(key, 0, limit - 1, withscores=True)
    score, member = after
    flat = connection.register_script(PAGE_AFTER)(keys=[key], args=[repr(float(score)), member, limit])
    return [(name, float(value)) for name, value in zip(flat[::2], flat[1::2], strict=True)]
