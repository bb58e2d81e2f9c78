"""WatchStatus without a thread per watch: one reader per watched result, shared by all who watch it.

The reader reads the song's status every WATCH_INTERVAL (on the blocking pool, with a Redis budget of its own for
each read) and hands each change to every watcher of it; a watcher is a coroutine waiting for the next change,
keeping only the newest it has not sent yet, so a watcher whose client reads slowly skips statuses rather than
piling them up. The reader stops when its song ends, when its last watcher leaves, or when a read fails (every
watcher then ends with that error). `limit` bounds the watches open in this process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from msaas.deadline import spending_redis_budget
from msaas.errors import BackendUnavailable, TooManyCalls
from msaas.options import Options
from msaas.shapes import SongState
from msaas.tenants import Tenant
from msaas.v1 import separation_pb2 as pb
from rpc.blocking import Blocking

log = logging.getLogger(__name__)
# How often a reader reads its song's status in Redis (and its place in the queue, a rank, while queued); a watch
# sends only what changed. Once per result and tenant, however many watch it.
WATCH_INTERVAL = 0.3
# ...and at least this many times as long as its last read took: when many songs are watched and reads slow down
# (the CPU, Redis, the pool of threads are busy), every reader reads less often, so watches cannot take the
# process over.
READ_SPACING = 4.0
READS_AT_ONCE = 4  # reads under way at once, all songs together: the event loop keeps its share of the CPU
SHUTTING_DOWN = "the server is shutting down; call WatchStatus again to go on watching"


class _Watcher:
    """One watch: the newest status (or error) it has not sent yet."""

    def __init__(self) -> None:
        self.pending: tuple[pb.SongStatus, bool] | BaseException | None = None
        self.changed = asyncio.Event()

    def offer(self, item: tuple[pb.SongStatus, bool] | BaseException) -> None:
        self.pending = item
        self.changed.set()

    async def next(self) -> tuple[pb.SongStatus, bool]:
        await self.changed.wait()
        self.changed.clear()
        item, self.pending = self.pending, None
        if isinstance(item, BaseException):
            raise item
        return item


class _Reader:
    """Reads one result's status until it ends, telling its watchers each change."""

    def __init__(self, read: Callable[[], Awaitable[tuple[pb.SongStatus, bool]]], interval: float) -> None:
        self.read = read
        self.interval = interval
        self.watchers: set[_Watcher] = set()
        self.latest: tuple[pb.SongStatus, bool] | None = None
        self.task: asyncio.Task | None = None

    def join(self, watcher: _Watcher) -> None:
        self.watchers.add(watcher)
        if self.latest is not None:
            watcher.offer(self.latest)

    def tell(self, item: tuple[pb.SongStatus, bool] | BaseException) -> None:
        for watcher in self.watchers:
            watcher.offer(item)

    async def run(self) -> None:
        try:
            while True:
                started = time.monotonic()
                message, ended = await self.read()
                took = time.monotonic() - started
                if self.latest is None or message != self.latest[0]:
                    self.latest = (message, ended)
                    self.tell(self.latest)
                if ended:
                    return
                await asyncio.sleep(max(self.interval, READ_SPACING * took))
        except asyncio.CancelledError:
            raise
        except Exception as error:  # told to every watcher, whose guard answers it (NOT_FOUND, UNAVAILABLE, ...)
            self.tell(error)


class Watches:
    def __init__(
        self, describe: Callable[[Tenant, str, Options], SongState],
        status_message: Callable[[SongState], pb.SongStatus],
        blocking: Blocking, redis_timeout: float, limit: int, interval: float = WATCH_INTERVAL,
    ) -> None:
        self.describe = describe
        self.status_message = status_message
        self.blocking = blocking
        self.redis_timeout = redis_timeout
        self.limit = limit
        self.interval = interval
        self.readers: dict[tuple[str, str, Options], _Reader] = {}  # by tenant, song and options: what one sees
        self.reading = asyncio.Semaphore(READS_AT_ONCE)
        self.open = 0
        self.stopping = False

    async def follow(self, tenant: Tenant, songhash: str, options: Options) -> AsyncIterator[pb.SongStatus]:
        """The status now, then each change, until the song ends (or the call does: its coroutine is cancelled).
        Close it when done with it (`contextlib.aclosing`), so the watch is counted out at once."""
        if self.stopping:
            raise BackendUnavailable(SHUTTING_DOWN)
        if self.open >= self.limit:
            raise TooManyCalls(f"this server has {self.limit} watches open (GRPC_MAX_WATCHES); call again later, "
                               "or poll GetStatus")
        key = (tenant.name, songhash.lower(), options)
        reader = self.readers.get(key)
        if reader is None or reader.task is None or reader.task.done():  # done: ended or failed, not yet forgotten
            reader = self.readers[key] = _Reader(lambda: self._read(tenant, songhash, options), self.interval)
            reader.task = asyncio.create_task(reader.run(), name=f"watch {songhash}")
            reader.task.add_done_callback(lambda _: self._forget(key, reader))
        watcher = _Watcher()
        reader.join(watcher)
        self.open += 1
        try:
            while True:
                message, ended = await watcher.next()
                yield message
                if ended:
                    return
        finally:
            self.open -= 1
            reader.watchers.discard(watcher)
            if not reader.watchers and reader.task is not None:
                reader.task.cancel()
                self._forget(key, reader)  # now: a watch of the song from here on gets a reader of its own

    def stop(self) -> None:
        """End every watch with UNAVAILABLE, so its client calls again (another replica), and take no more."""
        self.stopping = True
        for reader in list(self.readers.values()):
            if reader.task is not None:
                reader.task.cancel()
            reader.tell(BackendUnavailable(SHUTTING_DOWN))

    def _forget(self, key: tuple[str, str, Options], reader: _Reader) -> None:
        if self.readers.get(key) is reader:
            del self.readers[key]

    async def _read(self, tenant: Tenant, songhash: str, options: Options) -> tuple[pb.SongStatus, bool]:
        async with self.reading:
            with spending_redis_budget(self.redis_timeout):  # each read its own: a reader is no one call
                song = await self.blocking(self.describe, tenant, songhash, options)
        return self.status_message(song), song.ended
