"""Is this upload an MP3? Its first frames must be well-formed MPEG Layer III and its start must decode."""

from __future__ import annotations

import os
import tempfile

import sphn

from msaas.errors import BadRequest

# Bitrates (kbit/s) by index for Layer III: MPEG-1, then MPEG-2 and 2.5.
BITRATES = {
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
SAMPLE_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
SCAN_LIMIT = 64 * 1024  # how far past the ID3 tag the first frame may start
DECODE_PREFIX = 256 * 1024  # bytes handed to the decoder: a few seconds at any bitrate
DECODE_SECONDS = 2.0


def frame_length(header: bytes) -> int | None:
    """Length in bytes of the Layer III frame starting with `header` (4 bytes), or None if it is not one."""
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
    return (144 if version == 3 else 72) * bitrate // rate + padding


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


def check_mp3(data: bytes, scratch_dir: str | None = None) -> None:
    """Raise BadRequest unless `data` starts with MPEG Layer III frames that decode to audio."""
    if first_frame(data) is None:
        raise BadRequest("mp3 is not an MP3 file: no MPEG Layer III frame header found", "invalid_mp3")
    # The decoder reads files; its first seconds are enough to tell audio from a look-alike.
    fd, path = tempfile.mkstemp(suffix=".mp3", dir=scratch_dir)
    try:
        with os.fdopen(fd, "wb") as prefix:
            prefix.write(data[:DECODE_PREFIX])
        samples, _ = sphn.read(path, duration_sec=DECODE_SECONDS)
    except (ValueError, OSError) as error:
        reason = str(error).rpartition('": ')[2]  # the decoder prefixes our temp file's name
        raise BadRequest(f"mp3 does not decode as MP3 audio: {reason}", "invalid_mp3") from None
    finally:
        os.unlink(path)
    if samples.size == 0:
        raise BadRequest("mp3 decodes to no audio", "invalid_mp3")
