"""One run of the `demucs.separate` CLI as a subprocess, and what its outcome means."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

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


class SeparationFailed(Exception):
    """Demucs did not produce the tracks; the message says why, for the job's status."""


@dataclass(frozen=True)
class DemucsRun:
    model: str
    input_path: Path
    out_dir: Path

    def command(self, settings: Settings) -> list[str]:
        command = [sys.executable, "-m", "demucs.separate", "--mp3", "-n", self.model, "-o", str(self.out_dir)]
        command += ["-d", settings.demucs_device]
        if settings.demucs_segment:
            command += ["--segment", str(settings.demucs_segment)]
        if settings.demucs_repo:
            command += ["--repo", str(settings.demucs_repo)]
        return [*command, str(self.input_path)]

    def track_path(self, track: str) -> Path:
        # demucs.separate writes <out>/<model>/<input name without extension>/<track>.mp3
        return self.out_dir / self.model / self.input_path.stem / f"{track}.mp3"


def environment(settings: Settings) -> dict[str, str]:
    """The subprocess's environment: weights are cached under the model cache folder when one is set."""
    env = dict(os.environ)
    if settings.model_cache_dir:
        env["TORCH_HOME"] = str(settings.model_cache_dir)
        env["HF_HOME"] = str(settings.model_cache_dir / "huggingface")
    return env


def separate(run: DemucsRun, tracks: tuple[str, ...], settings: Settings, log_path: Path) -> dict[str, Path]:
    """Run Demucs and return each track's file; raise SeparationFailed with the reason otherwise."""
    with open(log_path, "wb") as output:
        # A session of its own, so a signal meant for the worker does not cut the separation short.
        process = subprocess.run(
            run.command(settings),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment(settings),
            start_new_session=True,
            check=False,
        )
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


def explain_failure(model: str, returncode: int, output: str) -> str:
    """A one-line reason for a failed Demucs run, from its exit code and the end of its output."""
    last = _last_line(output)
    if any(marker in output for marker in DOWNLOAD_FAILURE_MARKERS):
        return f"could not download the weights of model {model} (is the network or model cache reachable?): {last}"
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
