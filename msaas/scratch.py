"""Scratch space owned by one process: a folder per process, holding a lock file that process keeps locked.

A process killed with SIGKILL (an OOM kill, a node drain) runs no cleanup, so its spooled uploads and
half-separated songs would stay in WORK_DIR for ever. The kernel releases a dead process' `flock`, so the next
process to start takes every folder whose lock it can get as abandoned and removes it; folders of processes
still running (other gunicorn workers, other workers sharing the volume) stay locked and are left alone.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)
PREFIX = "msaas-scratch-"
LOCK = "owner.lock"

_claimed: dict[tuple[int, Path], tuple[Path, int]] = {}  # (pid, root) -> (folder, locked descriptor)


def claim(root: Path | str | None, service: str) -> Path:
    """This process' scratch folder under `root` (the system's temp folder if None), made on the first call
    after sweeping folders whose owners are gone; the same folder on every later call."""
    root = Path(root or tempfile.gettempdir())
    key = (os.getpid(), root)  # a forked child is another owner: it gets its own folder
    if key not in _claimed:
        sweep(root)
        # Made under another name and locked before it gets a name a sweep looks at, so no sweep sees it unlocked.
        making = Path(tempfile.mkdtemp(prefix=f".making-{service}-", dir=root))
        descriptor = os.open(making / LOCK, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(descriptor, fcntl.LOCK_EX)  # held until this process ends, however it ends
        folder = root / f"{PREFIX}{service}-{os.getpid()}-{making.name.rsplit('-', 1)[1]}"
        making.rename(folder)
        _claimed[key] = (folder, descriptor)
    return _claimed[key][0]


def sweep(root: Path) -> list[Path]:
    """Remove the scratch folders under `root` whose owner is gone; the folders removed."""
    removed = []
    for folder in root.glob(f"{PREFIX}*"):
        if folder.is_dir() and _abandoned(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    if removed:
        log.info("removed %d scratch folder(s) left by processes that are gone", len(removed))
    return removed


def _abandoned(folder: Path) -> bool:
    try:
        descriptor = os.open(folder / LOCK, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False  # another process swept it meanwhile, or someone else's folder
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # its owner holds it
    finally:
        os.close(descriptor)  # closing drops the lock we may have taken
    return True
