"""Bare `python -m demucs.separate`: the comparison the service is measured against, timed phase by phase."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.config import Model, child_env, torch_threads_env
from bench.measure import PeakRss

LOADED = b"Separating track"  # printed once the model is loaded, before the audio is read
SEPARATED = b"100%|"  # the progress bar's last frame; after it Demucs only encodes and writes the stems


@dataclass(frozen=True)
class BareRun:
    seconds: float  # process start to exit
    loaded: float  # to LOADED: interpreter start, imports, model load
    separated: float  # to the last SEPARATED: also reading the audio and separating it
    peak_rss: int  # bytes, the process and any children


def command(model: Model, song: Path, out: Path) -> list[str]:
    """The flags the worker gives Demucs (worker/demucs_run.py) for the default options: MP3 stems, CPU."""
    return [sys.executable, "-m", "demucs.separate", "--mp3", *model.flags(), "-o", str(out), "-d", "cpu", str(song)]


def run_bare(song: Path, model: Model, threads: int, scratch: Path) -> BareRun:
    """Separate `song` once with `threads` Torch threads; the stems go to a folder removed afterwards."""
    with tempfile.TemporaryDirectory(dir=scratch, prefix="bare-") as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            command(model, song, Path(out)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=child_env(**torch_threads_env(threads)),
            cwd=out,
        )
        loaded = separated = None
        tail = b""
        with PeakRss(process.pid) as memory:
            while chunk := process.stdout.read1(65536):
                now = time.perf_counter()
                tail = (tail + chunk)[-4000:]  # a marker may straddle two reads
                if loaded is None and LOADED in tail:
                    loaded = now
                if SEPARATED in tail[-len(chunk) - len(SEPARATED) :]:
                    separated = now
            process.wait()
            ended = time.perf_counter()
    if process.returncode != 0 or loaded is None or separated is None:
        output = tail.decode(errors="replace").replace("\r", "\n")
        raise RuntimeError(f"demucs.separate exited with {process.returncode} on {song.name}:\n{output}")
    return BareRun(ended - started, loaded - started, separated - started, memory.peak)
