"""Is this upload an MP3? Its first frames must be well-formed MPEG Layer III, its start must decode, and
its length (summed from the frame headers) must be within the limit."""

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


class Frame(NamedTuple):
    length: int  # bytes
    samples: int  # per channel
    rate: int  # Hz


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


def duration_seconds(data: bytes, offset: int) -> float:
    """Length of the audio, summing the frames from `offset` until the frames stop (an ID3v1 tag, say)."""
    samples, rate, end = 0, 0, len(data)
    while offset + 4 <= end and data[offset] == 0xFF and (frame := FRAMES[data[offset + 1] << 8 | data[offset + 2]]):
        samples += frame.samples
        rate = frame.rate
        offset += frame.length
    return samples / rate if rate else 0.0


def check_mp3(path: str, max_seconds: float = 0.0) -> float:
    """Raise BadRequest unless the file holds MPEG Layer III audio that decodes and is not too long;
    return its duration in seconds."""
    with open(path, "rb") as file:
        if file.seek(0, 2) == 0:
            raise BadRequest("mp3 is empty", "missing_mp3")
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            offset = first_frame(data)
            if offset is None:
                raise BadRequest("mp3 is not an MP3 file: no MPEG Layer III frame header found", "invalid_mp3")
            duration = duration_seconds(data, offset)
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
