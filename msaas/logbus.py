"""The log bus: every service pushes its log lines onto one Redis list; the logs service prints them."""

from __future__ import annotations

import logging
import sys
import time

import redis

FORMAT = "%(asctime)s %(hostname)s %(service)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


class LogBus:
    def __init__(self, connection: redis.Redis, key: str) -> None:
        self.redis = connection
        self.key = key

    def push(self, line: str) -> None:
        self.redis.lpush(self.key, line)

    def pop(self, timeout: float) -> str | None:
        """The oldest line, waiting up to `timeout` seconds; None if there was none."""
        item = self.redis.brpop([self.key], timeout)
        if item is None:
            return None
        line = item[1]
        return line.decode(errors="replace") if isinstance(line, bytes) else line


class LogBusHandler(logging.Handler):
    """Pushes records onto the bus. While Redis is away it stays quiet for a while rather than stall callers."""

    pause_after_failure = 5.0

    def __init__(self, bus: LogBus) -> None:
        super().__init__()
        self.bus = bus
        self._paused_until = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        if time.monotonic() < self._paused_until:
            return
        try:
            self.bus.push(self.format(record))
        except redis.RedisError:
            self._paused_until = time.monotonic() + self.pause_after_failure


class _Identity(logging.Filter):
    """Stamps every record with the host and service that wrote it."""

    def __init__(self, hostname: str, service: str) -> None:
        super().__init__()
        self.hostname = hostname
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.hostname = self.hostname
        record.service = self.service
        return True


def setup_logging(service: str, hostname: str, level: str, bus: LogBus | None) -> None:
    """Log to stderr and, when given a bus, onto it; one format for both."""
    formatter = logging.Formatter(FORMAT, DATE_FORMAT)
    identity = _Identity(hostname, service)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if bus is not None:
        handlers.append(LogBusHandler(bus))
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(identity)
        root.addHandler(handler)
    root.setLevel(level.upper())
    # Client libraries chatter at DEBUG/INFO about connections; their warnings still come through.
    for noisy in ("urllib3", "redis", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
