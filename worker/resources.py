"""What a worker may use: its CPUs and its memory, as its container (cgroup v2 or v1) allows, else the machine's.

PyTorch sizes itself from the machine, not the container: on a 16-core node a pod limited to 2 CPUs would run 16
threads and be throttled, and a song that fits the node's memory may not fit the pod's.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a number near 2**63


def cpus(cgroup: Path = CGROUP) -> int:
    """The CPUs this process may use: its CPU affinity, capped by the cgroup's CPU quota, rounded up."""
    count = len(os.sched_getaffinity(0))
    quota = _read(cgroup / "cpu.max")  # v2: "<quota> <period>" or "max <period>"
    if quota is None:  # v1: two files
        v1_quota, v1_period = _read(cgroup / "cpu" / "cpu.cfs_quota_us"), _read(cgroup / "cpu" / "cpu.cfs_period_us")
        quota = f"{v1_quota} {v1_period}" if v1_quota and v1_period and not v1_quota.startswith("-") else None
    try:
        limit, period = quota.split() if quota else ("max", "1")
        if limit != "max":
            count = min(count, math.ceil(int(limit) / int(period)))
    except ValueError:
        pass
    return max(1, count)


def memory_limit(cgroup: Path = CGROUP, meminfo: Path = Path("/proc/meminfo")) -> int:
    """Bytes of memory this process's container may use: its cgroup's limit, else the machine's memory."""
    for path in (cgroup / "memory.max", cgroup / "memory" / "memory.limit_in_bytes"):
        text = _read(path)
        if text and text.isdigit() and int(text) < UNLIMITED:
            return int(text)
    text = _read(meminfo) or ""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return UNLIMITED


def own_rss() -> int:
    """This process's resident memory in bytes."""
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def group_rss(group: int) -> int:
    """The resident memory of every process in process group `group`, in bytes (0 for those gone meanwhile)."""
    total = 0
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
            if int(fields[2]) == group:  # the fields after the name: state, ppid, pgrp, ..., rss (the 22nd)
                total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return total


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
