"""One run of the `demucs.separate` CLI as a subprocess, and what its outcome means."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import sphn

from msaas.jobs import Options
from msaas.settings import Settings

# Lines in Demucs' output that mean the weights could not be fetched (no network, hub or mirror down).
DOWNLOAD_FAILURE_MARKERS = (
    "urlopen error",
    "URLError",
    "Name or service not known",
    "Temporary failure in name resolution",
    "Max retries exceeded",
    "LocalEntryNotFoundError",
    "Connection refused",
    "HTTP Error",
)
TAIL_BYTES = 4000
PROGRESS = re.compile(rb"(\d{1,3})%\|")  # tqdm's " 45%|####      | 13.5/30.0 [...]"
# Runs the command after asking the kernel to SIGKILL it if the worker dies: a worker killed mid-job
# (OOM, SIGKILL) must not leave a separation running on as an orphan.
DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGKILL); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


class SeparationFailed(Exception):
    """Demucs did not produce the tracks; the message says why, for the job's status."""


class Abandoned(Exception):
    """The separation was stopped because the worker is shutting down; the job is not at fault."""


@dataclass(frozen=True)
class DemucsRun:
    model: str
    input_path: Path
    out_dir: Path
    options: Options = Options()

    def command(self, settings: Settings) -> list[str]:
        command = [sys.executable, "-m", "demucs.separate", *self.format_flags(), "-n", self.model]
        command += ["-o", str(self.out_dir), "-d", settings.demucs_device]
        if self.options.two_stems:
            command += ["--two-stems", self.options.two_stems]
        if settings.demucs_segment:
            command += ["--segment", str(settings.demucs_segment)]
        if settings.demucs_repo:
            command += ["--repo", str(settings.demucs_repo)]
        return [*command, str(self.input_path)]

    def format_flags(self) -> list[str]:
        if self.options.format == "flac":
            return ["--flac"]
        if self.options.format == "wav":
            return []  # Demucs' default
        return ["--mp3", "--mp3-bitrate", str(self.options.mp3_bitrate)] if self.options.mp3_bitrate else ["--mp3"]

    def track_path(self, track: str) -> Path:
        # demucs.separate writes <out>/<model>/<input name without extension>/<track>.<format>
        return self.out_dir / self.model / self.input_path.stem / f"{track}.{self.options.format}"


def environment(settings: Settings) -> dict[str, str]:
    """The subprocess's environment: weights are cached under the model cache folder when one is set, and
    an `ffmpeg` is on the PATH (Demucs writes FLAC through it) even where the system has none."""
    env = dict(os.environ)
    if settings.model_cache_dir:
        env["TORCH_HOME"] = str(settings.model_cache_dir)
        env["HF_HOME"] = str(settings.model_cache_dir / "huggingface")
    env["PATH"] = f"{_ffmpeg_dir()}{os.pathsep}{env.get('PATH', '')}"
    return env


def _ffmpeg_dir() -> Path:
    """A folder holding `ffmpeg`: a link to the binary the imageio-ffmpeg wheel ships."""
    folder = Path(tempfile.gettempdir()) / "msaas-ffmpeg"
    link = folder / "ffmpeg"
    if not link.exists():
        folder.mkdir(exist_ok=True)
        try:
            link.symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
        except FileExistsError:
            pass  # another worker made it first
    return folder


def progress_of(log_path: Path) -> float | None:
    """The last percentage Demucs' progress bar showed, if any."""
    with open(log_path, "rb") as file:
        file.seek(max(0, log_path.stat().st_size - TAIL_BYTES))
        found = PROGRESS.findall(file.read())
    return float(found[-1]) if found else None


def time_limit(settings: Settings, input_path: Path) -> float:
    """Seconds a separation may take: a floor plus a multiple of the song's duration."""
    try:
        duration = sphn.durations([str(input_path)])[0] or 0.0
    except (ValueError, OSError):
        duration = 0.0  # undecodable: Demucs will say so quickly
    return settings.demucs_timeout_min + settings.demucs_timeout_factor * duration


def separate(
    run: DemucsRun,
    tracks: tuple[str, ...],
    settings: Settings,
    log_path: Path,
    abandon: Callable[[], bool] = lambda: False,
    report: Callable[[float], None] = lambda percent: None,
) -> dict[str, Path]:
    """Run Demucs and return each track's file; raise SeparationFailed with the reason otherwise.

    Past its time limit, or when `abandon()` turns true, the whole process group is killed. `report` hears
    the progress percentage about once a second.
    """
    limit = time_limit(settings, run.input_path)
    command = run.command(settings)
    with open(log_path, "wb") as output:
        # A process group of its own, so it can be killed whole, and so a signal meant for the worker
        # does not cut the separation short.
        process = subprocess.Popen(
            [command[0], "-c", DIE_WITH_PARENT, *command[1:]],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment(settings),
            start_new_session=True,
        )
    started = reported = time.monotonic()
    try:
        while process.poll() is None:
            now = time.monotonic()
            if now - started > limit:
                raise SeparationFailed(f"demucs timed out after {limit:.0f} s and was killed")
            if abandon():
                raise Abandoned()
            if now - reported >= 1.0 and (percent := progress_of(log_path)) is not None:
                report(percent)
                reported = now
            time.sleep(0.2)
    finally:
        _kill(process)  # whatever ends the wait, no separation outlives it
    tail = _tail(log_path)
    if process.returncode != 0:
        raise SeparationFailed(explain_failure(run.model, process.returncode, tail))
    outputs = {track: run.track_path(track) for track in tracks}
    missing = [track for track, path in outputs.items() if not path.is_file() or path.stat().st_size == 0]
    if missing:
        raise SeparationFailed(
            f"demucs exited 0 but produced no {', '.join(missing)} track(s): {_last_line(tail) or 'no output'}"
        )
    return outputs


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


def explain_failure(model: str, returncode: int, output: str) -> str:
    """A one-line reason for a failed Demucs run, from its exit code and the end of its output."""
    last = _last_line(output)
    for line in output.splitlines():
        if "LoadAudioError" in line:  # Demucs' own words for an input it cannot decode
            return f"the input does not decode as audio: {line.rpartition('got the following error: ')[2]}"
    if any(marker in output for marker in DOWNLOAD_FAILURE_MARKERS):
        return f"could not download the weights of model {model} (is the network or model cache reachable?): {last}"
    if returncode == -signal.SIGKILL:
        return f"demucs was killed (signal 9: out of memory, or the container's memory limit?): {last}"
    if returncode < 0:
        return f"demucs was killed by signal {-returncode}: {last}"
    return f"demucs exited with code {returncode}: {last}"


def _tail(path: Path) -> str:
    with open(path, "rb") as file:
        file.seek(max(0, path.stat().st_size - TAIL_BYTES))
        return file.read().decode(errors="replace")


def _last_line(text: str) -> str:
    # tqdm redraws progress bars with carriage returns; the last real line is what explains a failure.
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else ""
