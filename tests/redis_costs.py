"""What one request costs Redis, counted instead of timed: every command Redis runs for it, those its scripts run
included (MONITOR shows both), and how many elements each may touch. Two counts of the same request with 100 and
10,000 songs queued (or with and without 300,000 other songs' records) tell whether its cost grows with either.

A command touches one element (a hash field, a member found by its score or rank: O(1) or O(log n)), except:
a range touches as many as it may return (`ZRANGE k 0 49`: 50; without a bound, the whole key as it stands after
the request); a read of a whole key (`SMEMBERS`, `HGETALL`) touches the key's size; a step of a walk of the keyspace
(`SCAN`) its COUNT, and `KEYS` the whole keyspace. No request may walk the keyspace at all: `walks` lists them.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

WALKS = frozenset({"SCAN", "KEYS", "SSCAN", "HSCAN", "ZSCAN"})
# Range reads: (index of the first bound among the arguments, how the bound is read).
RANGES = frozenset({"LRANGE", "ZRANGE", "ZREVRANGE", "ZRANGEBYSCORE", "ZREVRANGEBYSCORE", "ZRANGEBYLEX"})
WHOLE = {"SMEMBERS": "scard", "HGETALL": "hlen", "HKEYS": "hlen", "HVALS": "hlen", "SINTER": "scard",
         "SUNION": "scard", "SDIFF": "scard"}
SIZES = {"list": "llen", "zset": "zcard", "set": "scard", "hash": "hlen"}
# Not the request's: a connection's handshake, the gRPC server's readiness probe, the markers themselves.
HOUSEKEEPING = frozenset({"HELLO", "CLIENT", "SELECT", "AUTH", "PING", "ECHO", "INFO"})
LINE = re.compile(r'^[\d.]+ \[\d+ ([^\]]+)\] (.*)$')
ARGUMENT = re.compile(r'"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Command:
    name: str
    args: tuple[str, ...]
    in_script: bool

    def __str__(self) -> str:
        shown = " ".join(arg if len(arg) <= 40 else arg[:37] + "..." for arg in self.args[:6])
        return f"{'lua: ' if self.in_script else ''}{self.name} {shown}"


@dataclass(frozen=True)
class Cost:
    commands: tuple[Command, ...]
    touched: int  # elements the commands may have read or written, at most

    @property
    def names(self) -> Counter:
        return Counter(command.name for command in self.commands)

    @property
    def walks(self) -> list[Command]:
        return [command for command in self.commands if command.name in WALKS]

    def reads_whole(self, prefix: str) -> list[Command]:
        """Commands that read all of a key named `prefix...` (a range without a bound, or a whole-key read)."""
        return [command for command in self.commands
                if command.args[:1] and command.args[0].startswith(prefix) and _unbounded(command)]

    def __str__(self) -> str:
        """The commands by name, and those that read more than one element in full."""
        counts = ", ".join(f"{name} x{count}" for name, count in sorted(self.names.items()))
        wide = [str(command) for command in self.commands
                if command.name in WALKS or command.name in RANGES or _unbounded(command)]
        return f"{len(self.commands)} commands, {self.touched} elements ({counts}); ranges and whole reads: " + \
            "; ".join(wide[:20])


class Monitor:
    """`monitor.measure()` delimits one request with markers, and reads what Redis ran meanwhile from a MONITOR
    connection of its own, open only while it measures (so filling Redis between measurements costs it nothing)."""

    def __init__(self, host: str, port: int, ignored_keys: tuple[str, ...] = ()) -> None:
        self.host, self.port = host, port
        self.client = redis.Redis(host=host, port=port, decode_responses=True)
        self.ignored_keys = set(ignored_keys)  # the log list: what a service logs meanwhile is not the request's

    @contextmanager
    def measure(self) -> Iterator[list[Cost]]:
        """`with monitor.measure() as cost: request()` then `cost[0]` is what the request cost."""
        marker = uuid.uuid4().hex
        with _Lines(self.host, self.port) as lines:
            self.client.echo(f"start-{marker}")
            found: list[Cost] = []
            yield found
            self.client.echo(f"end-{marker}")
            taken = lines.between(f"start-{marker}", f"end-{marker}")
        commands = [command for line in taken if (command := _parse(line)) is not None
                    and command.name not in HOUSEKEEPING and not self.ignored_keys & set(command.args[:1])]
        found.append(Cost(tuple(commands), sum(self._touched(command) for command in commands)))

    def _touched(self, command: Command) -> int:
        if command.name == "KEYS":
            return self.client.dbsize()
        if command.name in WALKS:  # one step of a walk: about COUNT slots of the keyspace (10 unless told)
            upper = [arg.upper() for arg in command.args]
            return int(command.args[upper.index("COUNT") + 1]) if "COUNT" in upper else 10
        if command.name in RANGES and not _unbounded(command):
            return _width(command)
        if _unbounded(command):
            key = command.args[0]
            kind = self.client.type(key)
            return getattr(self.client, SIZES[kind])(key) if kind in SIZES else 0
        return 1


def _parse(line: str) -> Command | None:
    match = LINE.match(line)
    if match is None:
        return None
    args = [re.sub(r"\\(x[0-9a-fA-F]{2}|.)", _unescape, arg) for arg in ARGUMENT.findall(match.group(2))]
    if not args:
        return None
    return Command(args[0].upper(), tuple(args[1:]), match.group(1) == "lua")


def _unescape(match: re.Match) -> str:
    code = match.group(1)
    return chr(int(code[1:], 16)) if code.startswith("x") and len(code) == 3 else \
        {"n": "\n", "r": "\r", "t": "\t"}.get(code, code)


def _limit(args: tuple[str, ...]) -> int | None:
    upper = [arg.upper() for arg in args]
    if "LIMIT" in upper:
        count = int(args[upper.index("LIMIT") + 2])
        return None if count < 0 else count
    return None


def _unbounded(command: Command) -> bool:
    if command.name in WHOLE:
        return True
    if command.name not in RANGES:
        return False
    args = command.args
    by_index = command.name in ("LRANGE", "ZRANGE", "ZREVRANGE") and not {"BYSCORE", "BYLEX"} & {
        arg.upper() for arg in args}
    if by_index:
        start, stop = int(args[1]), int(args[2])
        return start < 0 or stop < 0
    return _limit(args) is None


def _width(command: Command) -> int:
    args = command.args
    if command.name in ("LRANGE", "ZRANGE", "ZREVRANGE") and _limit(args) is None:
        return max(0, int(args[2]) - int(args[1]) + 1)
    return _limit(args) or 0


class _Lines:
    """The lines of a MONITOR connection, read by a thread while in use."""

    def __init__(self, host: str, port: int) -> None:
        self.connection = redis.connection.Connection(host=host, port=port, socket_timeout=None)
        self.lines: list[str] = []
        self.seen = threading.Condition()

    def __enter__(self) -> _Lines:
        self.connection.connect()
        self.connection.send_command("MONITOR")
        self.connection.read_response()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.connection.disconnect()
        self.reader.join(10)

    def _read(self) -> None:
        while True:
            try:
                line = self.connection.read_response()
            except (redis.RedisError, OSError, AttributeError, ValueError):  # closed by __exit__
                return
            with self.seen:
                self.lines.append(line.decode(errors="replace") if isinstance(line, bytes) else str(line))
                self.seen.notify_all()

    def between(self, start: str, end: str) -> list[str]:
        """The lines after the one holding `start` and before the one holding `end` (waited for)."""
        with self.seen:
            if not self.seen.wait_for(lambda: any(end in line for line in self.lines[-50:]), 60):
                raise AssertionError("MONITOR never showed the end marker")
            first = next(index for index, line in enumerate(self.lines) if start in line)
            last = next(index for index, line in enumerate(self.lines) if end in line)
            return self.lines[first + 1:last]
