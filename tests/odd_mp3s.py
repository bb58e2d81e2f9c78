"""MP3s as they come from the wild, made with real tools (lameenc, ffmpeg) and the tag formats' own layouts: files a
mainstream decoder plays whole though they are not a plain run of frames, and files that are not MP3 audio at all.

Each builder writes a few seconds of a tone; none holds copyrighted audio."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import imageio_ffmpeg
import lameenc
import numpy as np

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def tone(seconds: float, rate: int = 44100, pitch: float = 440.0) -> bytes:
    """Stereo 16-bit PCM of a tone with a slow swell, so no two seconds are the same."""
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * pitch * t) * np.linspace(0.5, 1, len(t))
    return (np.stack([wave, 0.8 * wave], 1) * 32767).astype("<i2").tobytes()


def lame(seconds: float, rate: int = 44100, kbps: int = 128, pitch: float = 440.0) -> bytes:
    """Plain LAME frames (lameenc): MPEG-1 at 32-48 kHz, MPEG-2 at 16-24 kHz."""
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(kbps)
    encoder.set_in_sample_rate(rate)
    encoder.set_channels(2)
    encoder.silence()
    return bytes(encoder.encode(tone(seconds, rate, pitch)) + encoder.flush())


def ffmpeg_mp3(seconds: float, folder: Path, name: str = "ffmpeg.mp3", pitch: float = 440.0) -> bytes:
    """An MP3 as most are: ffmpeg's libmp3lame, with an ID3v2 tag and a Xing/Info header."""
    source, path = folder / f"{name}.pcm", folder / name
    source.write_bytes(tone(seconds, pitch=pitch))
    subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-y", "-f", "s16le", "-ar", "44100", "-ac", "2", "-i",
                    str(source), "-codec:a", "libmp3lame", "-b:a", "128k", "-metadata", "title=a tone", str(path)],
                   check=True)
    source.unlink()
    return path.read_bytes()


def syncsafe(size: int) -> bytes:
    return bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0))


def id3v2(frames: list[tuple[bytes, bytes]], padding: int = 0) -> bytes:
    """An ID3v2.3 tag holding `frames` (id, body), with `padding` zero bytes counted in its size."""
    body = b"".join(name + struct.pack(">I", len(data)) + b"\0\0" + data for name, data in frames) + b"\0" * padding
    return b"ID3\x03\x00\x00" + syncsafe(len(body)) + body


def title(text: str) -> tuple[bytes, bytes]:
    return b"TIT2", b"\x00" + text.encode("latin-1")


def picture(size: int) -> tuple[bytes, bytes]:
    """An APIC frame with a `size`-byte "JPEG" (noise: it is never shown)."""
    jpeg = b"\xff\xd8\xff\xe0" + np.random.default_rng(7).bytes(size - 4)
    return b"APIC", b"\x00image/jpeg\x00\x03cover\x00" + jpeg


def ape_item(key: str, value: bytes, binary: bool = False) -> bytes:
    return struct.pack("<II", len(value), 2 if binary else 0) + key.encode() + b"\0" + value


def apev2(items: list[bytes], header: bool) -> bytes:
    """An APEv2 tag: its items and footer, with the optional header in front."""
    body = b"".join(items)

    def block(is_header: bool) -> bytes:
        flags = (1 << 31 if header else 0) | (1 << 29 if is_header else 0)
        return b"APETAGEX" + struct.pack("<IIII", 2000, len(body) + 32, len(items), flags) + b"\0" * 8

    return (block(True) if header else b"") + body + block(False)


def id3v1(song: str) -> bytes:
    return b"TAG" + song.encode().ljust(30, b"\0") + b"\0" * 30 * 3 + b"\0" * 4 + b"\0" * 30 + b"\xff"


def lyrics3v2(text: str) -> bytes:
    """A Lyrics3 v2 block (it sits before an ID3v1 tag): fields, their size in six digits, LYRICS200."""
    fields = b"IND00003" + b"110" + b"LYR" + f"{len(text):05d}".encode() + text.encode()
    body = b"LYRICSBEGIN" + fields
    return body + f"{len(body):06d}".encode() + b"LYRICS200"


def riff_wave_mp3(mp3: Path, folder: Path) -> bytes:
    """The MP3's frames in a RIFF/WAVE file (format 0x55, MPEG Layer III), as ffmpeg writes one."""
    path = folder / "riff.wav"
    subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-y", "-i", str(mp3), "-codec:a", "copy", "-f", "wav",
                    str(path)], check=True)
    return path.read_bytes()


def other_format(mp3: Path, folder: Path, name: str, *codec: str) -> bytes:
    path = folder / name
    subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-y", "-i", str(mp3), *codec, str(path)], check=True)
    return path.read_bytes()


PLAYABLE = ("two-mp3s-concatenated", "mp3-in-riff-wave", "trailing-zeros", "apev2-without-header",
            "lyrics3v2-and-id3v1", "second-id3v2-with-picture", "id3v2-padding-past-its-size", "apev2-binary-item",
            "rate-change-44-to-22", "rate-change-44-to-48")


# Each accepted by ffmpeg, whole; refused (or accepted, then failed) by the frame walk and sphn before (issue 20).
def playable(folder: Path) -> dict[str, bytes]:
    first = ffmpeg_mp3(3, folder, "first.mp3")
    second = ffmpeg_mp3(2, folder, "second.mp3", pitch=660)
    frames = lame(3)
    return {
        "two-mp3s-concatenated": first + second,
        "mp3-in-riff-wave": riff_wave_mp3(folder / "first.mp3", folder),
        "trailing-zeros": frames + b"\0" * 4096,
        "apev2-without-header": frames + apev2([ape_item("Title", b"a tone"), ape_item("Comment", b"la " * 1000)],
                                               header=False),
        "lyrics3v2-and-id3v1": frames + lyrics3v2("".join(f"[00:{second:02d}]la la la\n" for second in range(60)) * 2)
                               + id3v1("a tone"),
        "second-id3v2-with-picture": id3v2([title("a tone")]) + id3v2([picture(100_000)]) + frames,
        "id3v2-padding-past-its-size": id3v2([title("a tone")], padding=16) + b"\0" * 100_000 + frames,
        "apev2-binary-item": frames + apev2([ape_item("Cover Art (Front)", b"cover.jpg\0"
                                                      + np.random.default_rng(3).bytes(20_000), binary=True)],
                                            header=True),
        "rate-change-44-to-22": lame(2) + lame(2, rate=22050, kbps=64, pitch=660),
        "rate-change-44-to-48": lame(2) + lame(2, rate=48000, pitch=660),
    }


# Not MP3 audio, whatever a decoder makes of them.
def unplayable(folder: Path) -> dict[str, tuple[bytes, str]]:
    """Each file and words its refusal must hold."""
    mp3 = folder / "source.mp3"
    mp3.write_bytes(lame(3))
    hls = f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{mp3}\n#EXT-X-ENDLIST\n".encode()
    return {
        "text": (b"hello, I am a text file\n" * 40, "not an MP3"),
        "noise": (np.random.default_rng(5).bytes(50_000), "not an MP3"),
        "an-id3v2-tag-and-nothing-else": (id3v2([title("a tone")], padding=2048), "not an MP3"),
        "truncated-to-a-frame-header": (lame(3)[:4], "not an MP3"),
        "pcm-wav": (other_format(mp3, folder, "pcm.wav"), "pcm_s16le"),
        "flac": (other_format(mp3, folder, "song.flac"), "not an MP3"),
        "ogg-vorbis": (other_format(mp3, folder, "song.ogg", "-codec:a", "libvorbis"), "not an MP3"),
        "mp2": (other_format(mp3, folder, "song.mp2", "-codec:a", "mp2"), "mp2"),
        "hls-playlist-naming-an-mp3": (hls, "not an MP3"),
        "ffconcat-naming-an-mp3": (f"ffconcat version 1.0\nfile {mp3}\n".encode(), "not an MP3"),
    }


