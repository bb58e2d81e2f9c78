"""What the service takes for a song, and how long it is: one decoder decides, over the whole file, at the door
(REST, gRPC) and again in the worker, with the same arguments.

The decoder is ffmpeg (the imageio-ffmpeg wheel's static binary) in a subprocess, so no native decoder runs inside
a service process (a crash or an environment variable cannot take a server down with it), and what is accepted is
what a mainstream player plays: an MP3, however it is tagged, padded or concatenated, or MP3 audio in a RIFF/WAVE
file. ffmpeg may only open the upload as an MP3 or a WAV file (no playlist or concat script that names other files
or URLs) and only decode MPEG Layer III. The song's length is the frames it decodes to, at 44.1 kHz stereo, as the
worker separates them: counted as they stream from ffmpeg, never held, and no further than the limit and a second,
so a file that decodes to hours costs no more than a song at the limit.
"""

from __future__ import annotations

import functools
import re
import subprocess
import threading
from collections.abc import Callable

import imageio_ffmpeg

from msaas.errors import BadRequest

SAMPLE_RATE = 44100  # every Demucs model's rate
CHANNELS = 2
FRAME_BYTES = 4 * CHANNELS  # one frame of float32 samples
MIN_SONG_SECONDS = 1.0  # less is a cut-off file, not a song
DOOR_DECODES = 2  # decodes at once per service process: a REST pod runs 2 processes on 1 CPU (rest/k8s)
READ_BYTES = 1 << 20  # read from ffmpeg at a time
MAX_ERROR_RATE = 2 / 3  # the share of frames that may fail to decode (ffmpeg's default, made explicit)
STDERR_KEEP = 4096  # bytes of ffmpeg's messages kept from each end: what explains a failure
# ffmpeg's own names: the demuxers that may open an upload, the decoders that may decode it.
FORMATS = "mp3,wav"
DECODERS = "mp3float,mp3"


def command(path: str, max_seconds: float) -> list[str]:
    """The ffmpeg command that decodes the song to float32 frames on its stdout."""
    limit = ["-t", f"{max_seconds + 1:.3f}"] if max_seconds > 0 else []
    return [
        imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-v", "error",
        "-max_error_rate", f"{MAX_ERROR_RATE:.4f}",
        "-protocol_whitelist", "file", "-format_whitelist", FORMATS, "-codec_whitelist", DECODERS, "-i", f"file:{path}",
        "-map", "0:a:0", *limit, "-f", "f32le", "-ac", str(CHANNELS), "-ar", str(SAMPLE_RATE), "pipe:1",
    ]  # fmt: skip


def decode(path: str, max_seconds: float, sink: Callable[[memoryview], object] | None = None) -> int:
    """Decode the song at `path` (its name ends in .mp3: ffmpeg's probe weighs the extension) and return its length
    in frames, handing `sink` the frames (interleaved float32) as they come; raise BadRequest, with a sentence
    that says why, when it is not MP3 audio, decodes to less than MIN_SONG_SECONDS, or is longer than
    `max_seconds` (0: no limit)."""
    limit = round(max_seconds * SAMPLE_RATE) if max_seconds > 0 else None
    # No environment: none of ffmpeg's variables (FFREPORT, AV_LOG_FORCE_COLOR, ...) changes what it decides.
    process = subprocess.Popen(command(path, max_seconds), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env={})
    said = Messages(process.stderr)
    frames, held = 0, 0  # bytes of a frame cut by a read, kept for the next
    buffer = memoryview(bytearray(READ_BYTES))
    try:
        while count := process.stdout.readinto(buffer[held:]):
            whole = (held + count) // FRAME_BYTES * FRAME_BYTES
            frames += whole // FRAME_BYTES
            if limit is not None and frames > limit:
                raise BadRequest(f"song is longer than the limit of {max_seconds:.0f} s", "too_long")
            if sink is not None:
                sink(buffer[:whole])
            held = held + count - whole
            buffer[:held] = buffer[whole : whole + held]
        returncode = process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        said.join()
    if returncode != 0:
        raise BadRequest(refusal(returncode, said.text(), path), "invalid_mp3")
    if frames < MIN_SONG_SECONDS * SAMPLE_RATE:
        decoded = f"only {frames / SAMPLE_RATE:.2f} s of it decodes" if frames else "not one of its frames decodes"
        raise BadRequest(f"mp3 does not decode as a song: {decoded} (a song is at least {MIN_SONG_SECONDS:.0f} s)",
                         "invalid_mp3")
    return frames


def measure(path: str, max_seconds: float, sink: Callable[[memoryview], object] | None = None) -> float:
    """The song's length in seconds, as the worker will decode it; BadRequest if it is not a song the service takes.
    `sink` hears the frames as `decode`'s does (msaas/previews.py weighs a song's loudness so).

    A plain blocking call (cooperative under gevent, whose monkey patching covers subprocess and threading; the
    gRPC service calls it in a worker thread); at most DOOR_DECODES run at once in a process, the others wait."""
    with _door():
        return decode(path, max_seconds, sink) / SAMPLE_RATE


@functools.cache
def _door() -> threading.BoundedSemaphore:
    # Made at first use, so under gunicorn it is gevent's (the worker patches threading before the app loads).
    return threading.BoundedSemaphore(DOOR_DECODES)


class Messages:
    """ffmpeg's messages, read as they come (a pipe left unread would stall it), their two ends kept."""

    def __init__(self, stream) -> None:
        self.head, self.tail = b"", b""
        self.thread = threading.Thread(target=self.read, args=(stream,), name="ffmpeg-messages", daemon=True)
        self.thread.start()

    def read(self, stream) -> None:
        with stream:
            while piece := stream.read1(STDERR_KEEP):
                if len(self.head) < STDERR_KEEP:
                    self.head += piece[: STDERR_KEEP - len(self.head)]
                self.tail = (self.tail + piece)[-STDERR_KEEP:]

    def join(self) -> None:
        self.thread.join()

    def text(self) -> str:
        return (self.head + b"\n" + self.tail).decode(errors="replace")


def refusal(returncode: int, said: str, path: str) -> str:
    """Why ffmpeg would not decode the upload, as a sentence for its client (never the server's file name)."""
    if returncode < 0:
        return f"mp3 does not decode as MP3 audio: the decoder crashed on it (signal {-returncode})"
    if "Format not on whitelist" in said:
        return "mp3 is not an MP3 file: it is a file of another format (only MP3, or MP3 audio in a WAV file, is taken)"
    if found := re.search(r"\[dec:(\w+) @[^]]*\] Error while opening decoder", said):
        return f"mp3 is not an MP3 file: its audio is {found[1]}, not MPEG Layer III"
    if "Error opening input" in said:
        why = "no two consecutive MPEG audio frames found" if "two consecutive MPEG audio frames" in said else (
            "no audio found that ffmpeg recognises")
        return f"mp3 is not an MP3 file: {why}"
    if "matches no streams" in said:
        return "mp3 is not an MP3 file: it holds no audio"
    if found := re.search(r"Decode error rate ([\d.]+) exceeds maximum ([\d.]+)", said):
        return (f"mp3 does not decode as MP3 audio: {float(found[1]):.0%} of its frames fail to decode (at most "
                f"{float(found[2]):.0%} may)")
    said = said.replace(f"file:{path}", "the upload").replace(path, "the upload")
    lines = [re.sub(r"^(\[[^]]*@ 0x[0-9a-f]+\] )+", "", line).strip() for line in said.splitlines()]
    last = next((line for line in reversed(lines) if line), f"ffmpeg exited with code {returncode}")
    return f"mp3 does not decode as MP3 audio: {last}"
