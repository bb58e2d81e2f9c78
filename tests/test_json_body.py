"""The streaming JSON body reader: the same fields and song as `json.loads` would give, however the body is
split as it arrives, and a clear error for everything `json.loads` refuses."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from pathlib import Path

import pytest

from msaas.errors import BadRequest, TooLarge
from rest.json_body import MAX_FIELDS, read_json

SONG = os.urandom(3000)
B64 = base64.b64encode(SONG).decode()


class Trickle(io.RawIOBase):
    """A request body that arrives `piece` bytes at a time, whatever the reader asks for."""

    def __init__(self, body: bytes, piece: int) -> None:
        self.body, self.piece, self.at = body, piece, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        part = self.body[self.at : self.at + min(self.piece, size if size > 0 else self.piece)]
        self.at += len(part)
        return part


def read(body: bytes | str, tmp_path: Path, piece: int = 1 << 20, limit: int = 1 << 26):
    body = body.encode() if isinstance(body, str) else body
    return read_json(Trickle(body, piece), limit, str(tmp_path))


@pytest.mark.parametrize("piece", [1, 2, 3, 5, 7, 64, 1 << 20])
@pytest.mark.parametrize(
    "document",
    [
        {"mp3": B64},
        {"mp3": B64, "callback": {"url": "http://h/x", "data": {"n": [1, 2.5, None, True, "é"]}}},
        {"model": "htdemucs", "two_stems": "vocals", "mp3_bitrate": 12345678901234567890, "mp3": B64},
    ],
)
def test_fields_and_song_are_those_json_loads_gives(tmp_path, document, piece):
    for text in (json.dumps(document), json.dumps(document, indent=2).replace("/", "\\/")):
        fields, upload = read(text, tmp_path, piece)
        assert fields == {key: value for key, value in json.loads(text).items() if key != "mp3"}
        assert Path(upload.path).read_bytes() == SONG and upload.size == len(SONG)
        assert upload.songhash == hashlib.sha224(SONG).hexdigest()
        upload.discard()


def test_json_escapes_inside_the_base64_string_are_undone(tmp_path):
    text = '{"mp3": "' + B64[:10] + f"\\u{ord(B64[10]):04x}" + B64[11:] + '"}'
    _, upload = read(text, tmp_path, piece=3)
    assert Path(upload.path).read_bytes() == SONG


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        ("", "invalid_json", "not valid JSON"),
        ("[1]", "invalid_json", "JSON object"),
        ('{"mp3": "QUJD"', "invalid_json", "not valid JSON"),
        ('{"mp3": "QUJD', "invalid_json", "ends inside"),
        ('{"mp3": "QUJD"} x', "invalid_json", "extra data"),
        ('{"mp3": "QUJD",}', "invalid_json", "not valid JSON"),
        ('{"mp3" "QUJD"}', "invalid_json", "expected ':'"),
        ('{"mp3": "QUJD" "a": 1}', "invalid_json", "expected ','"),
        ("{mp3: 1}", "invalid_json", "not valid JSON"),
        ('{"a": tru}', "invalid_json", "not valid JSON"),
        ('{"mp3": "QU\\u00zzJD"}', "invalid_json", "\\u escape"),
        ('{"mp3": "QUJD", "mp3": "QUJD"}', "invalid_json", "twice"),
        ('{"mp3": "QQ==QUJD"}', "invalid_base64", "padding"),
        ('{"mp3": "QUJ"}', "invalid_base64", "not valid base64"),
        ('{"mp3": "QU\\nJD"}', "invalid_base64", "not valid base64"),
        ('{"mp3": "QUJé"}', "invalid_base64", "not valid base64"),
        ('{"mp3": ""}', "missing_mp3", "empty"),
        ('{"mp3": null}', "missing_mp3", "missing"),
        ('{"mp3": ["QUJD"]}', "invalid_mp3", "base64 string"),
        ("{" + ",".join(f'"f{n}": {n}' for n in range(MAX_FIELDS + 1)) + "}", "invalid_json", "fields"),
        ('{"callback": ' + "[" * 100_000 + "]" * 100_000 + "}", "invalid_json", "nested too deeply"),
        ("[" * 100_000 + "]" * 100_000, "invalid_json", "must be a JSON object"),  # too big to say more
        ("[" * 10_000 + "]" * 10_000, "invalid_json", "nested too deeply"),
        ('\ufeff{"mp3": "QUJD"}', "invalid_json", "UTF-8, with no byte order mark"),
    ],
)
def test_what_json_loads_refuses_is_refused_and_leaves_no_file(tmp_path, body, code, words):
    for piece in (1, 4, 1 << 20):
        with pytest.raises(BadRequest) as refused:
            read(body, tmp_path, piece)
        assert refused.value.code == code and words in str(refused.value), str(refused.value)
        assert list(tmp_path.iterdir()) == []


def test_a_body_past_the_limit_is_refused_as_it_streams(tmp_path):
    with pytest.raises(TooLarge):
        read(json.dumps({"mp3": B64}), tmp_path, piece=1000, limit=2000)
    assert list(tmp_path.iterdir()) == []
