"""A backlog and a crowded keyspace, made quickly for tests and benchmarks: songs queued as the APIs queue them
(each tenant's claim, the status and the job, by msaas/claims.py's own script), and other songs' records as a worker
and the APIs leave them (a done status, its owner, its song's results, the tenant's claim: msaas/records.py), made
by the thousands in one script."""

from __future__ import annotations

import redis

from msaas.claims import Claims
from msaas.jobqueue import JobQueue
from msaas.jobs import Job
from msaas.options import Options
from msaas.records import claim_key, owners_key, results_key, status_key

OTHERS_PER_SCRIPT = 5_000  # Redis answers no one while a script runs: a fraction of a second each
OTHERS = """
local status, owners, results, claims, tenant, first, count = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5],
  tonumber(ARGV[6]), tonumber(ARGV[7])
for i = first, first + count - 1 do
  local r = redis.sha1hex('another song ' .. i) .. string.format('%016x', i)
  redis.call('HSET', status .. r, 'state', 'done', 'reason', '', 'queued_at', '1700000000.000', 'done_at',
             '1700000060.000', 'published', '7', 'job_id', 'job-' .. i, 'attempts', 1, 'seconds', 8, 'tenant', tenant)
  redis.call('SADD', owners .. r, tenant)
  redis.call('SADD', results .. r, r)
  redis.call('HSET', claims .. r, 'submitted_at', '1700000000.000')
end
return count
"""


def songhash(index: int) -> str:
    """The made-up songhash of backlog song `index`."""
    return f"{index:056x}"


def queue_songs(connection: redis.Redis, queue_name: str, model: str, count: int, first: int = 0,
                tenant: str = "open", seconds: float = 0.0) -> list[str]:
    """Songs `first` .. `first + count - 1` queued for `tenant`, in that order; their songhashes."""
    claims = Claims(connection, JobQueue(connection, queue_name, model))
    options = Options.resolve({}, model)
    queued = []
    for index in range(first, first + count):
        job = Job.of(songhash(index), options, model, seconds, tenant=tenant)
        claims.submit(tenant, job, None)
        queued.append(job.songhash)
    return queued


def other_songs(connection: redis.Redis, count: int, first: int = 0, tenant: str = "open") -> None:
    """`count` other songs' records, done and claimed by `tenant`: four keys each."""
    make = connection.register_script(OTHERS)
    for start in range(first, first + count, OTHERS_PER_SCRIPT):
        make(args=[status_key(""), owners_key(""), results_key(""), claim_key(tenant, ""), tenant, start,
                   min(OTHERS_PER_SCRIPT, first + count - start)])
