"""Measuring: the summed resident memory of a process tree, polled from /proc, and summary statistics."""

from __future__ import annotations

import glob
import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 1024 * 1024


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children are listed per thread that started them)."""
    found = []
    for children in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(children) as file:
                kids = [int(kid) for kid in file.read().split()]
        except OSError:  # the thread or the process ended meanwhile
            continue
        for kid in kids:
            found += [kid, *descendants(kid)]
    return found


def rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as file:
            return int(file.read().split()[1]) * PAGE
    except (OSError, IndexError):
        return 0  # gone


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants, summed (pages shared between them count each time)."""
    return sum(rss(member) for member in [pid, *descendants(pid)])


def anon_rss(pid: int) -> int:
    """Resident anonymous bytes (heap, buffers, stacks): RSS without file-backed pages such as a mapped file's."""
    try:
        with open(f"/proc/{pid}/status") as file:
            line = next(line for line in file if line.startswith("RssAnon:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration, IndexError, ValueError):
        return 0  # gone


def tree_anon_rss(pid: int) -> int:
    return sum(anon_rss(member) for member in [pid, *descendants(pid)])


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system, all its threads) of process `pid` so far; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def tree_cpu_seconds(pid: int) -> float:
    return sum(cpu_seconds(member) for member in [pid, *descendants(pid)])


class PeakRss:
    """`with PeakRss(pid) as memory:` polls the tree's RSS every `interval` seconds; `memory.peak` is the most."""

    def __init__(self, pid: int, interval: float = 0.1, measure: Callable[[int], int] = tree_rss) -> None:
        self.pid = pid
        self.interval = interval
        self.measure = measure
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name=f"rss-{pid}", daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.measure(self.pid))

    def _poll(self) -> None:
        while True:
            self.peak = max(self.peak, self.measure(self.pid))
            if self._stop.wait(self.interval):
                return


def idle_rss(pid: int, seconds: float = 1.0, interval: float = 0.1, measure: Callable[[int], int] = tree_rss) -> int:
    """The tree's typical RSS over `seconds` of doing nothing (the baseline a growth is measured from)."""
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(measure(pid))
        time.sleep(interval)
    return int(statistics.median(samples))


def percentile(values: Sequence[float], percent: float) -> float:
    return float(np.percentile(values, percent))


class OtherLoad:
    """`with OtherLoad() as other:` the CPU time this machine gave to processes outside this run meanwhile
    (anything else running skews every figure); this run's children count as its own once waited for."""

    def __enter__(self) -> OtherLoad:
        self._start = (_machine_busy(), _own_cpu(), time.monotonic())
        return self

    def __exit__(self, *_exc: object) -> None:
        busy, own, started = self._start
        self.core_seconds = max(0.0, (_machine_busy() - busy) - (_own_cpu() - own))
        self.share = self.core_seconds / ((time.monotonic() - started) * (os.cpu_count() or 1))


def _machine_busy() -> float:
    """CPU seconds all cores spent on anything but idling since boot (/proc/stat's first line)."""
    with open("/proc/stat") as file:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(n) for n in file.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system
