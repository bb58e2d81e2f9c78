"""A song's length is measured once, from every frame of the file, and a file that lies about it is refused.

Two files found by attacking the service: frames, junk, then a hundred times more frames (REST counted the
first part, the worker decoded everything); and a Xing header that claims one frame before ten minutes of them
(the worker trusted the header and gave the song two minutes and unbounded memory)."""

from __future__ import annotations

import subprocess

import imageio_ffmpeg
import lameenc
import numpy as np
import pytest

from msaas.errors import BadRequest
from msaas.mp3 import FRAMES, check_mp3, first_frame
from msaas.naming import songhash_of
from support import ROOT, queued

RATE = 44100


def encode(seconds: float, kbps: int = 128) -> bytes:
    """A real MP3 of a tone (lameenc, as the tests' other songs); MPEG-1 at 128 kbit/s."""
    t = np.arange(int(seconds * RATE)) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(kbps)
    encoder.set_in_sample_rate(RATE)
    encoder.set_channels(2)
    encoder.silence()
    return bytes(encoder.encode(np.stack([tone, tone], 1).tobytes()) + encoder.flush())


def frames_of(mp3: bytes) -> list[bytes]:
    offset, frames = first_frame(mp3), []
    while offset is not None and offset + 4 <= len(mp3) and (frame := FRAMES[mp3[offset + 1] << 8 | mp3[offset + 2]]):
        frames.append(mp3[offset : offset + frame.length])
        offset += frame.length
    return frames


def xing_frame(like: bytes, claimed: int) -> bytes:
    """A Xing header frame shaped like `like` (MPEG-1 stereo: 32 bytes of side information) claiming `claimed`."""
    body = b"\0" * 32 + b"Xing" + (1).to_bytes(4, "big") + claimed.to_bytes(4, "big")
    return like[:4] + body + b"\0" * (len(like) - 4 - len(body))


def decoded_seconds(path) -> float:
    """What ffmpeg's decoder gets from the whole file (the worker decodes long songs with it)."""
    pcm = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path),
                          "-f", "s16le", "-ac", "1", "-ar", str(RATE), "-"], capture_output=True, check=True).stdout
    return len(pcm) / 2 / RATE


@pytest.mark.parametrize("name", ["short-hum.mp3", "short-march.mp3", "song-rondo.mp3"])
def test_the_measured_length_is_the_length_a_decoder_gets(name):
    path = ROOT / "data" / name
    assert check_mp3(str(path)) == pytest.approx(decoded_seconds(path), abs=0.03)


def test_an_honest_xing_header_is_accepted_and_measured_by_its_frames(tmp_path):
    frames = frames_of(encode(30))
    path = tmp_path / "vbr.mp3"
    path.write_bytes(xing_frame(frames[0], len(frames)) + b"".join(frames))
    assert check_mp3(str(path)) == pytest.approx(30, abs=0.2)
    assert check_mp3(str(path)) == pytest.approx(decoded_seconds(path), abs=0.06)


def test_frames_after_junk_are_refused(tmp_path):
    frames = frames_of(encode(10))
    path = tmp_path / "junk.mp3"
    path.write_bytes(b"".join(frames[:200]) + b"\x00\x01\x02\x03" + frames[-1] * 20_000)
    assert decoded_seconds(path) > 500  # what a decoder would have separated
    with pytest.raises(BadRequest, match="frames stop at byte") as refusal:
        check_mp3(str(path), 3600)
    assert refusal.value.code == "invalid_mp3"


def test_a_xing_header_that_lies_about_the_frame_count_is_refused(tmp_path):
    frames = frames_of(encode(10))
    path = tmp_path / "liar.mp3"
    path.write_bytes(xing_frame(frames[0], 1) + frames[-1] * 23_000)  # ten minutes behind a claim of one frame
    with pytest.raises(BadRequest, match="claims 1 frames but it holds 23000"):
        check_mp3(str(path), 3600)


def test_tags_after_the_frames_are_not_junk_but_tag_lookalikes_are(tmp_path):
    audio = b"".join(frames_of(encode(5)))
    ape = b"APETAGEX" + (2000).to_bytes(4, "little") + (3000 - 32).to_bytes(4, "little") + b"\0" * (3000 - 16)
    for tail in (b"TAG" + b"\0" * 125, ape, ape + b"TAG" + b"\0" * 125):
        (tmp_path / "tagged.mp3").write_bytes(audio + tail)
        assert check_mp3(str(tmp_path / "tagged.mp3")) == pytest.approx(5, abs=0.1)
    # A tag whose size does not cover what follows hides frames behind it: refused.
    (tmp_path / "hidden.mp3").write_bytes(audio + ape + audio * 50)
    with pytest.raises(BadRequest, match="frames stop"):
        check_mp3(str(tmp_path / "hidden.mp3"))


@pytest.mark.parametrize("kind", ["junk", "liar"])
def test_rest_refuses_a_lying_mp3_and_keeps_nothing(client, store, redis_client, settings, kind):
    frames = frames_of(encode(10))
    if kind == "junk":
        mp3 = b"".join(frames[:200]) + b"\x00\x01\x02\x03" + frames[-1] * 20_000
    else:
        mp3 = xing_frame(frames[0], 1) + frames[-1] * 23_000
    answer = client.post("/apiv1/separate", data=mp3, content_type="audio/mpeg")
    assert answer.status_code == 400, answer.get_data(as_text=True)
    assert answer.get_json()["error"] == "invalid_mp3"
    assert not store.has_input(songhash_of(mp3))
    assert queued(settings) == 0


@pytest.mark.parametrize("encoding", [["-q:a", "4"], ["-b:a", "192k"]], ids=["vbr-xing", "cbr-info"])
def test_lame_files_as_users_send_them_are_accepted_and_measured_as_decoded(tmp_path, encoding):
    """What most MP3s are: LAME's own output, with its Xing/Info header (a frame count and the encoder delay
    decoders trim) and an ID3v2 tag, 150 s long: never refused as a liar, measured within the trimmed delay."""
    source = tmp_path / "source.mp3"
    source.write_bytes(encode(150))
    path = tmp_path / "lame.mp3"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(source), "-codec:a",
                    "libmp3lame", *encoding, "-id3v2_version", "3", "-metadata", "title=a song", str(path)], check=True)
    assert check_mp3(str(path), 3600) == pytest.approx(decoded_seconds(path), abs=0.1)
