"""One run of the `demucs.separate` CLI as a subprocess, and what its outcome means. A song's whole
separation (its length, chunk plan, runs and join) is worker/separation.py."""

from __future__ import annotations

import ctypes.util
import errno
import functools
import hashlib
import logging
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

from msaas.deadline import Deadline
from msaas.errors import ConfigError
from msaas.options import Options
from msaas.settings import Settings

log = logging.getLogger(__name__)
MALLOCS = ("tcmalloc", "system")
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
TAIL_BYTES = 16000
# Demucs' "Separating track <path>" before each input, and tqdm's " 45%|####      | 13.5/30.0 [...]".
EVENTS = re.compile(rb"(Separating track )|(\d{1,3})%\|")
# A traceback's last line: the exception's (dotted) name, then its message (code lines are indented); or
# Python's own last words before it dies of a signal.
EXCEPTION = re.compile(r"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)|Fatal Python error): (.+)$",
                       re.MULTILINE)
# Runs the command after asking the kernel to SIGKILL it if the worker dies: a worker killed mid-job
# (OOM, SIGKILL) must not leave a separation running on as an orphan.
DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGKILL); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


@dataclass(frozen=True)
class DemucsConfig:
    """The settings a Demucs run needs, taken once from `Settings`."""

    device: str = "cpu"
    segment: int | None = None
    repo: Path | None = None
    model_cache_dir: Path | None = None
    malloc: str = "tcmalloc"  # or "system"

    @classmethod
    def of(cls, settings: Settings) -> DemucsConfig:
        if settings.demucs_malloc not in MALLOCS:
            raise ConfigError(f"DEMUCS_MALLOC must be one of {', '.join(MALLOCS)}, not {settings.demucs_malloc!r}")
        return cls(settings.demucs_device, settings.demucs_segment, settings.demucs_repo, settings.model_cache_dir,
                   settings.demucs_malloc)


class SeparationFailed(Exception):
    """Demucs did not produce the tracks; the message says why, for the job's status."""


class Abandoned(Exception):
    """The separation was stopped because the worker is shutting down; the job is not at fault."""


@dataclass(frozen=True)
class DemucsRun:
    model: str
    input_path: Path
    out_dir: Path
    options: Options
    # What Demucs separates: float WAVs of the song or of its chunks at the level worker/encoding.py sets (the
    # input itself when empty).
    inputs: tuple[Path, ...] = ()
    jobs: int = 1  # segments Demucs separates at once (its -j)...
    threads: int = 1  # ...with this many Torch threads each
    tool = "demucs"  # what failure reasons call the runner (worker/roformer_run.py's: "the RoFormer separation")

    def command(self, config: DemucsConfig) -> list[str]:
        # Float WAVs, unclipped: the worker rescales and encodes the tracks (worker/encoding.py).
        command = [sys.executable, "-m", "demucs.separate", "--float32", "--clip-mode", "none", "-n", self.model]
        command += ["-o", str(self.out_dir), "-d", config.device, "--shifts", str(self.options.shifts)]
        if self.options.two_stems:
            command += ["--two-stems", self.options.two_stems]
        command += ["--overlap", f"{self.options.overlap:g}"]
        if self.jobs > 1:
            command += ["-j", str(self.jobs)]
        if config.segment:
            command += ["--segment", str(config.segment)]
        if config.repo:
            command += ["--repo", str(config.repo)]
        return [*command, *(str(path) for path in self.inputs or [self.input_path])]

    def environment(self, config: DemucsConfig) -> dict[str, str]:
        return environment(config, self.threads)

    def passes(self) -> int:
        return self.options.passes

    def track_path(self, track: str, source: Path | None = None) -> Path:
        # demucs.separate writes <out>/<model>/<input name without extension>/<track>.wav
        return self.out_dir / self.model / (source or self.input_path).stem / f"{track}.wav"


def environment(config: DemucsConfig, threads: int) -> dict[str, str]:
    """The subprocess's environment: weights are cached under the model cache folder when one is set, an
    `ffmpeg` is on the PATH even where the system has none, PyTorch runs `threads` threads per segment, its
    output is not buffered, and memory comes from tcmalloc (`DEMUCS_MALLOC`)."""
    env = dict(os.environ)
    if config.model_cache_dir:
        env["TORCH_HOME"] = str(config.model_cache_dir)
        env["HF_HOME"] = str(config.model_cache_dir / "huggingface")
    env["PATH"] = f"{ffmpeg_dir()}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"  # "Separating track" says when the input before is written: heard at once
    if config.malloc == "tcmalloc":
        env["LD_PRELOAD"] = " ".join(filter(None, [tcmalloc(), env.get("LD_PRELOAD")]))
    return env


@functools.cache
def tcmalloc() -> str | None:
    """The tcmalloc library to preload, or None (and a warning, once) where it is not installed.

    Torch allocates and frees large tensors at every layer of every segment; glibc's malloc hands big blocks
    back to the kernel and takes them again, page by page. tcmalloc keeps them: Demucs is about 15% faster with
    it (bench/RESULTS.md). Debian's `libtcmalloc-minimal4` (the images and `make install` install it)."""
    name = ctypes.util.find_library("tcmalloc_minimal")
    if name is None:
        log.warning("libtcmalloc_minimal is not installed: Demucs runs with the system's malloc, about 15%% slower "
                    "(apt-get install libtcmalloc-minimal4, or DEMUCS_MALLOC=system to silence this)")
    return name


def ffmpeg_dir() -> Path:
    """A folder holding `ffmpeg`: a link to the binary the imageio-ffmpeg wheel of this installation ships.

    One folder per binary, so installations side by side never share a link; and a link that no longer leads to a
    binary (its installation was removed) is replaced, atomically, not trusted as another worker's."""
    binary = imageio_ffmpeg.get_ffmpeg_exe()
    folder = Path(tempfile.gettempdir()) / f"msaas-ffmpeg-{hashlib.sha256(binary.encode()).hexdigest()[:12]}"
    link = folder / "ffmpeg"
    if not link.exists():  # follows the link: False for a dangling one too
        folder.mkdir(exist_ok=True)
        fresh = folder / f".ffmpeg-{os.getpid()}"
        fresh.unlink(missing_ok=True)
        fresh.symlink_to(binary)
        fresh.replace(link)
    return folder


class Progress:
    """The progress of one Demucs run, in percent, from its output. Demucs separates its inputs one after the other
    ("Separating track ..." before each, once the one before is written), and draws one bar per pass over each (one
    per random shift, and per model of a bag), each from 0 to 100%; `weights` are the inputs' shares of the run.
    Read as the output grows, a piece at a time; it never goes back."""

    def __init__(self, log_path: Path, passes: int, weights: tuple[float, ...] = (1.0,)) -> None:
        self.log_path = log_path
        self.passes = max(1, passes)
        self.weights = weights
        self.offset = 0  # bytes of the output read so far
        self.carry = b""  # its end after the last event: maybe the start of one cut in two
        self.started = 0  # inputs Demucs has begun: those before the last are written
        self.finished = 0  # bars of the current input that reached 100%
        self.current: float | None = None  # the percentage of the bar being drawn
        self.percent = 0.0

    def read(self) -> float | None:
        """The progress so far; None until Demucs has drawn a bar."""
        with open(self.log_path, "rb") as file:
            file.seek(self.offset)
            fresh = file.read()
        self.offset += len(fresh)
        text = self.carry + fresh
        end = 0
        for found in EVENTS.finditer(text):
            if found[1]:
                self.started, self.finished, self.current = self.started + 1, 0, None
            else:
                value = float(found[2])
                if value >= 100 and (self.current or 0) < 100:
                    self.finished += 1
                self.current = value
            end = found.end()
        self.carry = text[end:][-32:]
        if self.current is None and self.started <= 1:
            return None
        drawing = self.current if self.current is not None and self.current < 100 else 0.0
        done = sum(self.weights[:max(0, self.started - 1)])
        current = self.weights[min(max(0, self.started - 1), len(self.weights) - 1)]
        share = done + current * min(1.0, (self.finished * 100 + drawing) / (100 * self.passes))
        self.percent = max(self.percent, min(100.0, 100 * share))
        return self.percent


def run(demucs: DemucsRun, config, log_path: Path, deadline: Deadline,
        abandon: Callable[[], bool], report: Callable[[float], None],
        written: Callable[[int], None] = lambda index: None, weights: tuple[float, ...] = (1.0,),
        preempt: Callable[[int], float] = lambda group: 0.0) -> None:
    """Run the Demucs command (or another engine's run with the same methods: worker/roformer_run.py's
    RoformerRun) to its end, or kill it past the deadline of the whole separation; raise SeparationFailed when it
    fails. `written(i)` hears that the stems of input i are written, as soon as they are (Demucs goes on with the
    next; another engine's run tells it at its end); `weights` are the inputs' shares of the run, for `report`.
    `preempt(group)` may stop the run's process group for a while, and says for how long: the deadline moves by as
    much."""
    command = demucs.command(config)
    with open(log_path, "wb") as output:
        # A process group of its own, so it can be killed whole, and so a signal meant for the worker
        # does not cut the separation short.
        process = subprocess.Popen(
            [command[0], "-c", DIE_WITH_PARENT, *command[1:]],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=demucs.environment(config),
            start_new_session=True,
        )
    reported = time.monotonic()
    progress = Progress(log_path, demucs.passes(), weights)
    told = 0  # inputs whose stems `written` heard of
    try:
        while process.poll() is None:
            now = time.monotonic()
            if deadline.expired:
                raise SeparationFailed(f"{demucs.tool} timed out after {deadline.seconds:.0f} s and was killed")
            if abandon():
                raise Abandoned()
            deadline.extend(preempt(process.pid))
            percent = progress.read()
            if now - reported >= 1.0 and percent is not None:
                report(percent)
                reported = now
            for index in range(told, progress.started - 1):
                written(index)
            told = max(told, progress.started - 1)
            time.sleep(0.2)
    finally:
        _kill(process)  # whatever ends the wait, no separation outlives it
    if process.returncode != 0:
        output = tail(log_path)
        check_space(output, demucs.out_dir)
        raise SeparationFailed(explain_failure(demucs.model, process.returncode, output, demucs.tool))
    for index in range(told, len(demucs.inputs or [demucs.input_path])):
        written(index)


def check_space(output: str, path: Path) -> None:
    """A tool that failed for want of disk space: the scratch disk's fault, not the song's (the worker names
    WORK_DIR and counts the attempt)."""
    if "No space left on device" in output:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


def explain_failure(model: str, returncode: int, output: str, tool: str = "demucs") -> str:
    """A one-line reason for a failed Demucs run, from its exit code and the end of its output: in words (the error
    Demucs died of, or what its exit means), never a line of its code."""
    last = error_message(output) or last_words(output)
    if last.startswith("When trying to load using"):  # Demucs' LoadAudioError: each decoder's own words
        said = re.findall(r"When trying to load using (\w+), got the following error: (?:\"[^\"]*\": )?(.*)", output)
        return "the input does not decode as audio: " + "; ".join(f"{decoder}: {why}" for decoder, why in said)
    said = f": {last}" if last else ""
    if any(marker in output for marker in DOWNLOAD_FAILURE_MARKERS):
        return f"could not download the weights of model {model} (is the network or model cache reachable?){said}"
    if returncode == -signal.SIGKILL:
        return f"{tool} was killed (signal 9: out of memory, or the container's memory limit?){said}"
    if returncode < 0:
        return f"{tool} was killed by signal {-returncode}{said}"
    return f"{tool} exited with code {returncode}{said}"


def last_words(output: str) -> str:
    """The last line of `output` that is not code: a traceback's indented lines (where it was, the code, its
    carets) are skipped."""
    words, in_traceback = "", False
    for line in output.replace("\r", "\n").splitlines():
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
        elif in_traceback and line[:1].isspace():
            continue
        elif line.strip():
            words, in_traceback = line.strip(), False
    return words


def error_message(output: str) -> str:
    """The message of the last exception a Python traceback in `output` ends with ("" if none): the line
    `package.module.SomeError: message`, without its name."""
    found = EXCEPTION.findall(output.replace("\r", "\n"))
    return found[-1].strip() if found else ""


def tail(path: Path) -> str:
    with open(path, "rb") as file:
        file.seek(max(0, path.stat().st_size - TAIL_BYTES))
        return file.read().decode(errors="replace")


def last_line(text: str) -> str:
    # tqdm redraws progress bars with carriage returns; the last real line is what explains a failure.
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else ""
