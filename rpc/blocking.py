"""Keeping the event loop free: blocking work runs on a bounded pool of threads, and log records are written by a
thread of their own. The loop then only ever waits on its clients, so a frozen Redis or a slow disk holds the
calls that need them, never the health service or the calls that do not."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import queue
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from logging.handlers import QueueHandler, QueueListener
from typing import Any, TypeVar

T = TypeVar("T")
LOG_BACKLOG = 10_000  # records waiting for the log thread; more are dropped, never held in memory without end


class Blocking:
    """`await blocking(function, *args)`: `function(*args)` on one of `threads` threads, in the caller's context,
    so the call's Redis budget (msaas.deadline) goes with it."""

    def __init__(self, threads: int) -> None:
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="rpc-blocking")

    async def __call__(self, function: Callable[..., T], *args: Any) -> T:
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self.pool, context.run, function, *args)

    def shutdown(self) -> None:
        """Take no more work; what runs ends on its own (each wait is bounded: Redis budget, store deadline)."""
        self.pool.shutdown(wait=False, cancel_futures=True)


class _Enqueue(QueueHandler):
    """Hands records to the log thread as they are (one process: no pickling, so tracebacks stay records' own)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record.msg, record.args = record.getMessage(), None  # the arguments as they are now, not when written
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            pass  # the log thread is stuck (Redis frozen): this record is lost, the caller is not held


class LogThread:
    """The root logger's handlers (stderr, and the log bus in Redis) moved to a thread of their own while started:
    a log call, from the loop or anywhere, then only queues its record."""

    def __init__(self) -> None:
        self.records: queue.Queue[logging.LogRecord] = queue.Queue(LOG_BACKLOG)
        self.enqueue = _Enqueue(self.records)
        self.listener: QueueListener | None = None

    def start(self) -> None:
        root = logging.getLogger()
        handlers = [handler for handler in root.handlers if handler is not self.enqueue]
        for handler in handlers:
            root.removeHandler(handler)
        root.addHandler(self.enqueue)
        self.listener = QueueListener(self.records, *handlers, respect_handler_level=True)
        self.listener.start()

    def stop(self) -> None:
        """Write what is queued, and give the handlers back to the root logger (unless another took it over)."""
        if self.listener is None:
            return
        self.listener.stop()
        root = logging.getLogger()
        if self.enqueue in root.handlers:
            root.removeHandler(self.enqueue)
            for handler in self.listener.handlers:
                root.addHandler(handler)
        self.listener = None
