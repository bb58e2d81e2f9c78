"""`python -m logs`: pop log lines off the bus and print them, forever, across Redis restarts."""

from __future__ import annotations

import signal
import sys
import time

import redis

from msaas.backoff import Backoff
from msaas.connections import connect_redis
from msaas.logbus import LogBus
from msaas.settings import Settings

POP_TIMEOUT = 5.0


def follow(bus: LogBus, keep_going=lambda: True, out=sys.stdout, err=sys.stderr) -> None:
    backoff = Backoff()
    while keep_going():
        try:
            line = bus.pop(POP_TIMEOUT)
            backoff.reset()
        except (redis.ConnectionError, redis.TimeoutError) as error:
            delay = backoff.next_delay()
            print(f"logs: redis unavailable ({error}); retrying in {delay:.1f} s", file=err, flush=True)
            time.sleep(delay)
            continue
        if line is not None:
            print(line, file=out, flush=True)


def main() -> None:
    settings = Settings.from_env()
    running = [True]

    def stop(_signum: int, _frame: object) -> None:
        running[0] = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    bus = LogBus(connect_redis(settings), settings.log_list)
    print(f"logs: printing lines from redis {settings.redis_host}:{settings.redis_port} list {bus.key}", flush=True)
    follow(bus, lambda: running[0])


if __name__ == "__main__":
    main()
