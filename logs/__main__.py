"""`python -m logs`: pop log lines off the bus and print them readably, forever, across Redis restarts;
lines below `LOGS_MIN_LEVEL` are dropped."""

from __future__ import annotations

import logging
import signal
import sys
import time

import redis

from msaas.backoff import Backoff
from msaas.connections import connect_redis
from msaas.errors import ConfigError
from msaas.logbus import LogBus, readable
from msaas.settings import Settings

POP_TIMEOUT = 5.0


def follow(
    bus: LogBus, keep_going=lambda: True, out=sys.stdout, err=sys.stderr, min_level: int = logging.NOTSET
) -> None:
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
        text = None if line is None else readable(line, min_level)
        if text is not None:
            print(text, file=out, flush=True)


def main() -> None:
    settings = Settings.from_env()
    min_level = logging.getLevelName(settings.logs_min_level.upper())
    if not isinstance(min_level, int):
        raise ConfigError(f"LOGS_MIN_LEVEL={settings.logs_min_level!r} is not a level: DEBUG, INFO, WARNING, ERROR")
    running = [True]

    def stop(_signum: int, _frame: object) -> None:
        running[0] = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    bus = LogBus(connect_redis(settings), settings.log_list)
    print(
        f"logs: printing lines from redis {settings.redis_host}:{settings.redis_port} list {bus.key}, "
        f"{settings.logs_min_level.upper()} and above",
        flush=True,
    )
    follow(bus, lambda: running[0], min_level=min_level)


if __name__ == "__main__":
    main()
