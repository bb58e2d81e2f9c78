"""One mix rendered: an ffmpeg process (never the service's own: nothing is decoded there) that reads the tracks
from the store, sums them in double precision, each times its gain, and encodes the sum as the worker encodes
tracks; and the bound on the renders one service process runs at once. msaas/mixes.py decides what to render."""

from __future__ import annotations

import functools
import resource
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import imageio_ffmpeg

from msaas.audio import CHANNELS, SAMPLE_RATE, Messages
from msaas.errors import LocalResourceError, TooLarge, TooManyCalls
from msaas.recipes import Mix

RENDERS = 2  # mixes rendered at once per service process, each by one ffmpeg thread...
RENDER_BYTES = 768 * 2**20  # ...their outputs this much together in WORK_DIR; the others wait their turn...
RENDER_WAIT = 10.0  # ...this long, then are asked to retry (429)
READ_TIMEOUT_US = 30_000_000  # ffmpeg gives up on the store after this long without a byte (microseconds)
ENCODERS = {  # 16-bit WAV and FLAC as worker/encoding.py writes tracks; MP3 at LAME's quality 7, not the tracks' 2:
    # at the same bitrate it takes a third of the CPU (a 4-minute mix: about 1.1 s, not 2.8 s), so a render stays
    # within 2% of the song's separation (bench MIXES)
    "mp3": ["-c:a", "libmp3lame", "-compression_level", "7"],
    "wav": ["-c:a", "pcm_s16le"],
    "flac": ["-c:a", "flac", "-sample_fmt", "s16"],
}
DEMUXERS, DECODERS = "mp3,wav,flac", "mp3float,mp3,pcm_s16le,pcm_f32le,flac"  # the tracks' own formats, no other


class RenderFailed(Exception):
    """ffmpeg could not render the mix: `why`, in a few words for the client; `missing`: a track was not found."""

    def __init__(self, why: str, said: str, missing: bool = False) -> None:
        super().__init__(f"{why}: {said.strip()[-500:]}")
        self.why, self.missing = why, missing


def run(sources: list[tuple[str, float]], output: Path, mix: Mix, limit: float) -> float:
    """Render `mix` of `sources` (each a link to a track and its gain as a factor) into `output`, within `limit`
    seconds; the CPU seconds this process' finished children took meanwhile (the render's, unless other renders
    or door decodes ended then too). RenderFailed, or LocalResourceError for a full WORK_DIR."""
    before = _children_cpu()
    process = subprocess.Popen(command(sources, output, mix), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env={})
    said = Messages(process.stderr)
    try:
        returncode = process.wait(limit)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise RenderFailed(f"it took longer than {limit:.0f} s", "") from None
    finally:
        said.join()
    if returncode != 0:
        text = said.text()
        if "No space left on device" in text:
            raise LocalResourceError("no space left on device in WORK_DIR for the mix; try again later")
        raise RenderFailed("the object store may be unreachable", text, missing="404" in text)
    return _children_cpu() - before


@contextmanager
def turn(size: int) -> Iterator[None]:
    """One of this process' turns to render a mix of about `size` bytes (`Turns`)."""
    with _turns().turn(size, RENDER_WAIT):
        yield


def command(sources: list[tuple[str, float]], output: Path, mix: Mix) -> list[str]:
    """The ffmpeg command that sums `sources` (URL, gain as a factor) in double precision into `output`, encoded as
    the worker encodes tracks (`mix`'s format) and nothing else in it: no tags, no encoder's name, so a recipe
    always renders to the same bytes."""
    inputs: list[str] = []
    for url, _ in sources:
        inputs += ["-protocol_whitelist", "http,https,tcp,tls", "-format_whitelist", DEMUXERS,
                   "-codec_whitelist", DECODERS, "-rw_timeout", str(READ_TIMEOUT_US), "-i", url]
    scaled = ";".join(f"[{index}:a]volume={gain!r}:precision=double[a{index}]"
                      for index, (_, gain) in enumerate(sources))
    if len(sources) == 1:
        graph = scaled.replace("[a0]", "[mix]")
    else:
        heard = "".join(f"[a{index}]" for index in range(len(sources)))
        graph = f"{scaled};{heard}amix=inputs={len(sources)}:normalize=0:duration=longest[mix]"
    if mix.format == "wav" and mix.sample_format == "float32":
        encoder = ["-c:a", "pcm_f32le"]
    else:
        encoder = ENCODERS[mix.format] + (["-b:a", f"{mix.mp3_bitrate}k"] if mix.format == "mp3" else [])
    return [
        imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-v", "error", "-threads", "1",
        *inputs, "-filter_complex", graph, "-filter_complex_threads", "1", "-map", "[mix]",
        "-ar", str(SAMPLE_RATE), "-ac", str(CHANNELS), *encoder,
        "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact", "-f", mix.format, f"file:{output}",
    ]  # fmt: skip


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Turns:
    """This process' renders: at most `count` at once (each an ffmpeg on about one CPU), their outputs at most `size`
    bytes together on WORK_DIR until stored (the pods' scratch space is an emptyDir with a size limit)."""

    def __init__(self, count: int, size: int) -> None:
        self.count, self.size = count, size
        self.running = self.held = 0
        self.changed = threading.Condition()

    @contextmanager
    def turn(self, size: int, wait: float) -> Iterator[None]:
        """A turn for a render of about `size` bytes, waited for at most `wait` seconds (then TooManyCalls, 429);
        TooLarge (413) for a mix larger than all the room there is."""
        if size > self.size:
            raise TooLarge(f"this mix would be {size / 2**20:.0f} MiB, more than this server renders at once "
                           f"({self.size / 2**20:.0f} MiB): ask for FLAC or MP3, or 16-bit samples")
        with self.changed:
            if not self.changed.wait_for(lambda: self.running < self.count and self.held + size <= self.size, wait):
                raise TooManyCalls(f"this server is rendering as many mixes as it may ({self.count} at once, "
                                   f"{self.size / 2**20:.0f} MiB); try again in a few seconds")
            self.running += 1
            self.held += size
        try:
            yield
        finally:
            with self.changed:
                self.running -= 1
                self.held -= size
                self.changed.notify_all()


@functools.cache
def _turns() -> Turns:
    # Made at first use, so under gunicorn its lock is gevent's (the worker patches threading before the app loads).
    return Turns(RENDERS, RENDER_BYTES)
