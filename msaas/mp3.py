"""Is this upload an MP3, and how long is it? The one place a song's length is measured.

The length is summed from the frame headers over the whole file: each Layer III frame decodes to exactly the
samples its header announces, so this is the length a decoder gets, at a hundredth of a decode's cost. The frames
must account for the whole body: a file whose frames stop early with more data behind them (a decoder resyncs
and plays on), or whose Xing/VBRI header claims another frame count (some readers trust it), is refused. Its
start must also decode, so a look-alike of frame headers is refused too.
"""

from __future__ import annotations

import mmap
from typing import NamedTuple

import sphn

from msaas.errors import BadRequest

# Bitrates (kbit/s) by index for Layer III: MPEG-1, then MPEG-2 and 2.5.
BITRATES = {
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
SAMPLE_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
SCAN_LIMIT = 64 * 1024  # how far past the ID3 tag the first frame may start
DECODE_SECONDS = 2.0  # decoding this much tells audio from a look-alike; the worker decodes the rest


TAIL_SLACK = 1441  # bytes a file may end with after its last whole frame: a cut-off frame at most
FRAME_COUNT_SLACK = 2  # frames by which a Xing/VBRI count may differ from the frames found (encoders vary)


class Frame(NamedTuple):
    length: int  # bytes
    samples: int  # per channel
    rate: int  # Hz


class Measure(NamedTuple):
    seconds: float
    frames: int  # audio frames found, a Xing/VBRI header frame excluded
    end: int  # where the frames stop
    claimed: int | None  # the frame count a Xing/VBRI header claims, if any


def frame_info(header: bytes) -> Frame | None:
    """The Layer III frame starting with `header` (4 bytes), or None if it is not one."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version = (header[1] >> 3) & 3  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5, 1: reserved
    layer = (header[1] >> 1) & 3  # 1: Layer III
    bitrate_index = header[2] >> 4
    rate_index = (header[2] >> 2) & 3
    if version == 1 or layer != 1 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    bitrate = BITRATES[1 if version == 3 else 2][bitrate_index] * 1000
    rate = SAMPLE_RATES[version][rate_index]
    padding = (header[2] >> 1) & 1
    samples = 1152 if version == 3 else 576
    return Frame(samples // 8 * bitrate // rate + padding, samples, rate)


# frame_info for every value of a header's second and third bytes (the first is 0xFF): the length walk in
# `duration_seconds` visits every frame of the song (38 a second), and a lookup is 3 times faster.
FRAMES = tuple(frame_info(bytes((0xFF, index >> 8, index & 0xFF, 0))) for index in range(1 << 16))


def frame_length(header: bytes) -> int | None:
    frame = frame_info(header)
    return frame.length if frame else None


def id3_length(data: bytes) -> int:
    """Bytes taken by a leading ID3v2 tag (0 if none)."""
    if len(data) < 10 or data[:3] != b"ID3":
        return 0
    size = 0
    for byte in data[6:10]:  # "syncsafe": 7 bits a byte
        size = (size << 7) | (byte & 0x7F)
    footer = 10 if data[5] & 0x10 else 0
    return 10 + size + footer


def first_frame(data: bytes) -> int | None:
    """Offset of the first frame that is followed by another frame (or by the end of the data)."""
    start = id3_length(data)
    for offset in range(start, min(len(data), start + SCAN_LIMIT)):
        if data[offset] != 0xFF:
            continue
        length = frame_length(data[offset : offset + 4])
        if length is None:
            continue
        following = offset + length
        if following == len(data) or frame_length(data[following : following + 4]) is not None:
            return offset
    return None


def walk(data: bytes, offset: int) -> Measure:
    """Sum the frames from `offset` until they stop; a leading Xing/Info/VBRI frame holds no audio."""
    seconds, frames, end, claimed = 0.0, 0, len(data), None
    first = FRAMES[data[offset + 1] << 8 | data[offset + 2]] if offset + 4 <= end else None
    if first and (claimed := vbr_frame_count(data, offset)) is not None:
        offset += first.length
    while offset + 4 <= end and data[offset] == 0xFF and (frame := FRAMES[data[offset + 1] << 8 | data[offset + 2]]):
        seconds += frame.samples / frame.rate
        frames += 1
        offset += frame.length
    return Measure(seconds, frames, min(offset, end), claimed)


def vbr_frame_count(data: bytes, offset: int) -> int | None:
    """The frame count a Xing/Info or VBRI header in the frame at `offset` claims; None if it has none."""
    version, channel_mode = (data[offset + 1] >> 3) & 3, data[offset + 3] >> 6
    side_info = (32 if channel_mode != 3 else 17) if version == 3 else (17 if channel_mode != 3 else 9)
    at = offset + 4 + side_info
    if data[at : at + 4] in (b"Xing", b"Info"):
        flags = int.from_bytes(data[at + 4 : at + 8], "big")
        return int.from_bytes(data[at + 8 : at + 12], "big") if flags & 1 else None
    if data[offset + 36 : offset + 40] == b"VBRI":
        return int.from_bytes(data[offset + 50 : offset + 54], "big")
    return None


def trailing_tag(rest: bytes) -> bool:
    """True if `rest`, what follows the last frame, is tags that end the file (APEv2, ID3v2, ID3v1) and no audio."""
    while rest:
        if len(rest) == 128 and rest[:3] == b"TAG":  # ID3v1: the very last 128 bytes
            return True
        if rest[:8] == b"APETAGEX" and len(rest) >= 32:  # APEv2 with a header: its size counts what follows it
            size = 32 + int.from_bytes(rest[12:16], "little")
        elif rest[:3] == b"ID3" and len(rest) >= 10:
            size = id3_length(rest)
        else:
            return False
        rest = rest[size:]
    return True


def check_mp3(path: str, max_seconds: float = 0.0) -> float:
    """Raise BadRequest unless the file holds MPEG Layer III audio that decodes, whose frames account for the
    whole body, and that is not too long; return its length in seconds."""
    with open(path, "rb") as file:
        if file.seek(0, 2) == 0:
            raise BadRequest("mp3 is empty", "missing_mp3")
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            offset = first_frame(data)
            if offset is None:
                raise BadRequest("mp3 is not an MP3 file: no MPEG Layer III frame header found", "invalid_mp3")
            measure = walk(data, offset)
            rest = len(data) - measure.end
            if rest > TAIL_SLACK and not trailing_tag(data[measure.end :]):
                raise BadRequest(
                    f"mp3's frames stop at byte {measure.end} of {len(data)}: what follows is not MPEG audio",
                    "invalid_mp3",
                )
    if measure.claimed is not None and abs(measure.claimed - measure.frames) > FRAME_COUNT_SLACK:
        raise BadRequest(
            f"mp3's Xing/VBRI header claims {measure.claimed} frames but it holds {measure.frames}", "invalid_mp3"
        )
    duration = measure.seconds
    if max_seconds and duration > max_seconds:
        raise BadRequest(
            f"song is {duration:.0f} s long; the limit is {max_seconds:.0f} s",
            "too_long",
        )
    try:
        samples, _ = sphn.read(path, duration_sec=DECODE_SECONDS)
    except (ValueError, OSError) as error:
        reason = str(error).rpartition('": ')[2]  # the decoder prefixes the file's name
        raise BadRequest(f"mp3 does not decode as MP3 audio: {reason}", "invalid_mp3") from None
    if samples.size == 0:
        raise BadRequest("mp3 decodes to no audio", "invalid_mp3")
    return duration
