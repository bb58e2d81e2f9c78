"""The log bus: every service pushes its log lines onto one Redis list; the logs service prints them.

A line on the bus is a JSON object (time, level, host, service, logger, songhash, message, and the traceback
if any), so the logs service can filter by level and print each field readably; stderr gets plain text.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

import redis

FORMAT = "%(asctime)s %(hostname)s %(service)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
# Log calls name their song in the message ("job %s separated"); a record without `extra={"songhash": ...}`
# takes the first SHA-224 digest its message mentions.
SONGHASH_IN_MESSAGE = re.compile(r"(?<![0-9a-f])[0-9a-f]{56}(?![0-9a-f])")


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
        if not getattr(record, "songhash", None):
            found = SONGHASH_IN_MESSAGE.search(record.getMessage())
            record.songhash = found.group() if found else None
        return True


class JsonFormatter(logging.Formatter):
    """One bus line: the record's fields as a JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record, DATE_FORMAT),
            "level": record.levelname,
            "host": getattr(record, "hostname", ""),
            "service": getattr(record, "service", ""),
            "logger": record.name,
            "songhash": getattr(record, "songhash", None),
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def readable(line: str, min_level: int = logging.NOTSET) -> str | None:
    """A bus line as a person reads it, or None if it is below `min_level`. A line that is not one of ours
    (plain text from an older service) is printed as it came."""
    try:
        fields = json.loads(line)
        level = fields["level"]
    except (ValueError, TypeError, KeyError):
        return line
    number = logging.getLevelName(level)
    if isinstance(number, int) and number < min_level:
        return None
    text = f"{fields.get('time')} {fields.get('host')} {fields.get('service')} {level} {fields.get('logger')}: "
    text += str(fields.get("message"))
    songhash = fields.get("songhash")
    if songhash and songhash not in text:
        text += f" [song {songhash}]"
    if fields.get("exception"):
        text += "\n" + fields["exception"]
    return text


def setup_logging(service: str, hostname: str, level: str, bus: LogBus | None) -> None:
    """Log to stderr and, when given a bus, onto it; one format for both."""
    identity = _Identity(hostname, service)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    handlers: list[logging.Handler] = [stderr]
    if bus is not None:
        to_bus = LogBusHandler(bus)
        to_bus.setFormatter(JsonFormatter())
        handlers.append(to_bus)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.addFilter(identity)
        root.addHandler(handler)
    root.setLevel(level.upper())
    # Client libraries chatter at DEBUG/INFO about connections; their warnings still come through.
    for noisy in ("urllib3", "redis", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
