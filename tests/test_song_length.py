"""A song's length is decided once, by the decoder the worker uses, over the whole file (msaas/audio.py): what the
door accepts is what a mainstream decoder plays, as long as it plays, and no longer than the limit.

Files found by attacking the service: frames, junk, then a hundred times more frames (REST counted the first part,
the worker decoded everything); a Xing header that claims one frame before ten minutes of them (the worker trusted
the header); and the MP3s of issue 20 that ffmpeg plays whole but the door refused, or accepted and the worker
failed on (tests/odd_mp3s.py)."""

from __future__ import annotations

import base64
import subprocess
import wave
from dataclasses import replace

import imageio_ffmpeg
import lameenc
import numpy as np
import odd_mp3s
import pytest
import requests

from msaas import audio
from msaas.errors import BadRequest
from msaas.models import FOUR_STEMS
from msaas.naming import songhash_of
from rest import create_app
from support import ROOT, queued, wait_for

RATE = audio.SAMPLE_RATE
encode = odd_mp3s.lame


def frames_of(mp3: bytes) -> list[bytes]:
    """The Layer III frames of a plain MPEG-1 run of them (LAME's, from byte 0), each with its header."""
    offset, frames = 0, []
    while offset + 4 <= len(mp3) and mp3[offset] == 0xFF:
        bitrate = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)[mp3[offset + 2] >> 4] * 1000
        length = 144 * bitrate // RATE + ((mp3[offset + 2] >> 1) & 1)
        frames.append(mp3[offset : offset + length])
        offset += length
    return frames


def xing_frame(like: bytes, claimed: int) -> bytes:
    """A Xing header frame shaped like `like` (MPEG-1 stereo: 32 bytes of side information) claiming `claimed`."""
    body = b"\0" * 32 + b"Xing" + (1).to_bytes(4, "big") + claimed.to_bytes(4, "big")
    return like[:4] + body + b"\0" * (len(like) - 4 - len(body))


def decoded_frames(path) -> int:
    """What a plain ffmpeg gets from the whole file: no whitelist, no limit (frames at 44.1 kHz)."""
    pcm = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path),
                          "-f", "f32le", "-ac", "2", "-ar", str(RATE), "-"], capture_output=True, check=True).stdout
    return len(pcm) // audio.FRAME_BYTES


@pytest.fixture(scope="module")
def playable(tmp_path_factory) -> dict[str, bytes]:
    return odd_mp3s.playable(tmp_path_factory.mktemp("playable"))


@pytest.mark.parametrize("name", ["short-hum.mp3", "short-march.mp3", "song-rondo.mp3"])
def test_the_measured_length_is_the_length_a_decoder_gets(name):
    path = ROOT / "data" / name
    assert round(audio.measure(str(path), 3600) * RATE) == decoded_frames(path)


@pytest.mark.parametrize("name", odd_mp3s.PLAYABLE)
def test_what_ffmpeg_plays_whole_is_accepted_with_the_length_it_plays(tmp_path, playable, name):
    path = tmp_path / "song.mp3"
    path.write_bytes(playable[name])
    frames = decoded_frames(path)
    assert frames > 2.9 * RATE  # every file holds 3 s or more: played whole, not up to its oddity
    assert round(audio.measure(str(path), 3600) * RATE) == frames


def test_an_honest_xing_header_is_accepted_and_measured_by_its_frames(tmp_path):
    frames = frames_of(encode(30))
    path = tmp_path / "vbr.mp3"
    path.write_bytes(xing_frame(frames[0], len(frames)) + b"".join(frames))
    assert audio.measure(str(path), 3600) == pytest.approx(30, abs=0.2)
    assert round(audio.measure(str(path), 3600) * RATE) == decoded_frames(path)


def test_frames_after_junk_are_measured_as_a_decoder_plays_them(tmp_path):
    """REST used to count the 5 s before the junk, the worker to decode 9 minutes; now both decode it all."""
    frames = frames_of(encode(10))
    path = tmp_path / "junk.mp3"
    path.write_bytes(b"".join(frames[:200]) + b"\x00\x01\x02\x03" + frames[-1] * 20_000)
    assert decoded_frames(path) > 500 * RATE
    assert round(audio.measure(str(path), 3600) * RATE) == decoded_frames(path)
    with pytest.raises(BadRequest, match="longer than the limit of 300 s") as refusal:
        audio.measure(str(path), 300)
    assert refusal.value.code == "too_long"


def test_a_xing_header_that_lies_about_the_frame_count_is_not_believed(tmp_path):
    frames = frames_of(encode(10))
    path = tmp_path / "liar.mp3"
    path.write_bytes(xing_frame(frames[0], 1) + frames[-1] * 23_000)  # ten minutes behind a claim of one frame
    assert audio.measure(str(path), 3600) == pytest.approx(23_000 * 1152 / RATE, abs=0.1)
    assert round(audio.measure(str(path), 3600) * RATE) == decoded_frames(path)


def test_tags_after_the_frames_are_not_audio_and_audio_behind_a_tag_is(tmp_path):
    audio_ = b"".join(frames_of(encode(5)))
    ape = b"APETAGEX" + (2000).to_bytes(4, "little") + (3000 - 32).to_bytes(4, "little") + b"\0" * (3000 - 16)
    for tail in (b"TAG" + b"\0" * 125, ape, ape + b"TAG" + b"\0" * 125):
        (tmp_path / "tagged.mp3").write_bytes(audio_ + tail)
        assert audio.measure(str(tmp_path / "tagged.mp3"), 3600) == pytest.approx(5, abs=0.1)
    # A tag whose size does not cover what follows hides frames behind it: they are played, and counted.
    path = tmp_path / "hidden.mp3"
    path.write_bytes(audio_ + ape + audio_ * 50)
    assert decoded_frames(path) > 250 * RATE
    assert round(audio.measure(str(path), 3600) * RATE) == decoded_frames(path)


@pytest.mark.parametrize("kind", ["junk", "liar"])
def test_rest_refuses_a_song_longer_than_it_looks_and_keeps_nothing(store, redis_client, settings, kind):
    frames = frames_of(encode(10))
    if kind == "junk":  # 5 s, then junk, then 9 minutes
        mp3 = b"".join(frames[:200]) + b"\x00\x01\x02\x03" + frames[-1] * 20_000
    else:  # a claim of one frame, then 10 minutes
        mp3 = xing_frame(frames[0], 1) + frames[-1] * 23_000
    client = create_app(replace(settings, max_song_seconds=300)).test_client()
    answer = client.post("/apiv1/separate", data=mp3, content_type="audio/mpeg")
    assert answer.status_code == 400, answer.get_data(as_text=True)
    assert answer.get_json() == {"error": "too_long", "message": "song is longer than the limit of 300 s"}
    assert not store.has_input(songhash_of(mp3))
    assert queued(settings) == 0


def test_a_file_that_decodes_to_hours_is_decoded_no_further_than_the_limit(tmp_path):
    """A "decompression bomb": 8 kbit/s at 8 kHz is two hours in 7 MB. The door stops ffmpeg a second past the
    limit at the latest, so it costs no more than a song at the limit (bench: the figures)."""
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(8)
    encoder.set_in_sample_rate(8000)
    encoder.set_channels(1)
    encoder.silence()
    ten_minutes = (np.random.default_rng(1).standard_normal(8000 * 600) * 1000).astype("<i2").tobytes()
    path = tmp_path / "bomb.mp3"
    path.write_bytes((encoder.encode(ten_minutes) + encoder.flush()) * 12)  # MP3s played one after the other
    seen = []
    with pytest.raises(BadRequest, match="longer than the limit of 600 s"):
        audio.decode(str(path), 600, lambda samples: seen.append(len(samples)))
    assert 600 * RATE - audio.READ_BYTES < sum(seen) / audio.FRAME_BYTES <= 600 * RATE


@pytest.mark.parametrize("encoding", [["-q:a", "4"], ["-b:a", "192k"]], ids=["vbr-xing", "cbr-info"])
def test_lame_files_as_users_send_them_are_accepted_and_measured_as_decoded(tmp_path, encoding):
    """What most MP3s are: LAME's own output, with its Xing/Info header (a frame count and the encoder delay
    decoders trim) and an ID3v2 tag, 150 s long: measured as decoded, to the frame."""
    source = tmp_path / "source.mp3"
    source.write_bytes(encode(150))
    path = tmp_path / "lame.mp3"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(source), "-codec:a",
                    "libmp3lame", *encoding, "-id3v2_version", "3", "-metadata", "title=a song", str(path)], check=True)
    assert round(audio.measure(str(path), 3600) * RATE) == decoded_frames(path)


@pytest.mark.demucs
@pytest.mark.timeout(600)
def test_the_worker_separates_each_odd_mp3_into_tracks_of_the_length_the_door_measured(
    settings, rest, worker, store, playable, tmp_path
):
    """Issue 20: accepted, then failed after 3 attempts (an APEv2 binary item, a sample rate change), or refused
    though ffmpeg plays them: each now goes through REST and a real worker (demucs_unittest) to WAV tracks as long
    as the song the door measured, to the frame."""
    lengths = {}
    for name, mp3 in playable.items():
        (tmp_path / "song.mp3").write_bytes(mp3)
        lengths[songhash_of(mp3)] = round(audio.measure(str(tmp_path / "song.mp3"), 3600) * RATE)
        answer = requests.post(f"http://{rest}/apiv1/separate", json={"mp3": base64.b64encode(mp3).decode(),
                                                                      "format": "wav"}, timeout=60)
        assert answer.status_code == 200, (name, answer.text)

    def finished() -> bool:
        states = [requests.get(f"http://{rest}/apiv1/status/{songhash}?format=wav", timeout=10).json()
                  for songhash in lengths]
        failed = [state for state in states if state.get("state") == "failed"]
        assert not failed, failed
        return all(state.get("state") == "done" for state in states)

    wait_for(finished, 540, "every odd MP3 separated")
    for songhash, frames in lengths.items():
        for track in FOUR_STEMS:
            answer = requests.get(f"http://{rest}/apiv1/track/{songhash}/{track}.wav?format=wav", timeout=30)
            assert answer.status_code == 200
            (tmp_path / "track.wav").write_bytes(answer.content)
            with wave.open(str(tmp_path / "track.wav")) as track_file:
                assert (track_file.getframerate(), track_file.getnframes()) == (RATE, frames), (songhash, track)
