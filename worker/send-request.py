#!/usr/bin/env python3
"""Push a job for an already-uploaded song straight onto the worker queue, bypassing the REST service.

    REDIS_HOST=localhost REDIS_PORT=6379 python worker/send-request.py <songhash> [model]

The song must already be in the `queue` bucket as <songhash>.mp3 (e.g. uploaded once through REST).
Like the reference script, the job names the song with the key `hash`; workers accept it.
"""

import json
import os
import sys

import redis

if len(sys.argv) < 2:
    sys.exit(__doc__)
job = {"hash": sys.argv[1]}
if len(sys.argv) > 2:
    job["model"] = sys.argv[2]
connection = redis.Redis(
    host=os.getenv("REDIS_HOST", "localhost"), port=int(os.getenv("REDIS_PORT", "6379")), db=0
)
connection.lpush(os.getenv("WORKER_QUEUE", "toWorker"), json.dumps(job))
print(f"pushed {job} onto {os.getenv('WORKER_QUEUE', 'toWorker')}")
