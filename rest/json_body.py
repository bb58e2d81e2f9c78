"""A JSON request body read as it streams in, with its base64 `mp3` string decoded to disk on the way.

`json.loads` would hold the body, and then the `mp3` string, whole: two copies of a 64 MiB body per request in
flight. Here the body passes through a buffer of a few hundred KiB; only the other fields (a callback, options:
small) are parsed as JSON values. A body that does not start as an object goes to `json.loads`, which says
what is wrong with it.
"""

from __future__ import annotations

import json
from typing import BinaryIO

from msaas.errors import BadRequest
from msaas.uploads import CHUNK, Base64Sink, Upload, spool, too_large
from rest.limits import MAX_FIELD_BYTES, field_too_large

CUT_MARGIN = 16  # characters: a literal (`-Infinity`) or number cut by the end of the bytes at hand
MAX_FIELDS = 64  # the contract has a handful; a body of thousands of tiny fields is an attack
WHITESPACE = b" \t\r\n"
ESCAPES = {ord(k): v for k, v in {"/": b"/", '"': b'"', "\\": b"\\", "b": b"\b", "f": b"\f", "n": b"\n",
                                   "r": b"\r", "t": b"\t"}.items()}
DECODER = json.JSONDecoder()


def invalid_json(why: str) -> BadRequest:
    return BadRequest(
        f"request body is not valid JSON ({why}); send JSON with a base64 'mp3', or the MP3 itself "
        "with Content-Type: audio/mpeg",
        "invalid_json",
    )


class _Body:
    """The request body as it arrives: a buffer of what is not parsed yet, refilled from the stream."""

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self.stream, self.limit = stream, limit
        self.buffer, self.pos, self.size, self.ended = b"", 0, 0, False

    def fill(self) -> bool:
        """Read the next piece after what is left unparsed; False if nothing came."""
        if self.ended:
            return False
        piece = self.stream.read(CHUNK)
        self.size += len(piece)
        if self.size > self.limit:
            raise too_large(self.limit)
        self.ended = not piece
        self.buffer, self.pos = self.buffer[self.pos :] + piece, 0
        return bool(piece)

    def peek(self) -> int | None:
        """The next byte that is not whitespace (None at the end), leaving it unread."""
        while True:
            while self.pos < len(self.buffer) and self.buffer[self.pos] in WHITESPACE:
                self.pos += 1
            if self.pos < len(self.buffer):
                return self.buffer[self.pos]
            if not self.fill():
                return None

    def expect(self, byte: bytes, what: str) -> None:
        if self.peek() != byte[0]:
            raise invalid_json(f"expected {what} at byte {self.size - len(self.buffer) + self.pos}")
        self.pos += 1

    def need(self, count: int) -> bytes:
        """The next `count` bytes, whitespace included."""
        while len(self.buffer) - self.pos < count:
            if not self.fill():
                raise invalid_json("the body ends inside a string")
        return self.buffer[self.pos : self.pos + count]

    def value(self, budget: int) -> tuple[object, int]:
        """One JSON value (a key, a callback, an option) and the bytes it took, at most `budget`: the value is
        looked for in that many bytes of the body only, so a huge one is refused before it is ever held whole."""
        self.peek()
        while True:
            window = self.buffer[self.pos : self.pos + budget]
            full = len(window) == budget
            try:
                text = _utf8_prefix(window)
                value, end = DECODER.raw_decode(text)
                # A number at the window's end may go on in the next piece.
                if end < len(text) or (self.ended and not full):
                    size = len(text[:end].encode())
                    self.pos += size
                    return value, size
            except ValueError as error:  # JSONDecodeError, or UTF-8 that is not merely cut short
                if not full and self.ended or not _cut_short(error):
                    raise invalid_json(str(error)) from None
            except RecursionError:
                raise invalid_json("values nested too deeply") from None
            if full:
                raise field_too_large("the request's fields besides 'mp3'")
            self.fill()


def read_json(stream: BinaryIO, limit: int, scratch_dir: str | None) -> tuple[dict, Upload]:
    """The body's fields but `mp3`, and the song decoded from `mp3`; 400 for a body that is not a JSON object
    with a strict base64 string `mp3`, 413 past `limit` bytes."""
    body = _Body(stream, limit)
    if body.peek() != ord("{"):
        raise _not_an_object(body)
    body.pos += 1
    fields: dict = {}
    upload: Upload | None = None
    budget = MAX_FIELD_BYTES  # for every field but the song, names included
    try:
        while body.peek() != ord("}"):
            if fields or upload:
                body.expect(b",", "',' or '}' after a field")
            key, size = body.value(budget)
            budget -= size
            if not isinstance(key, str):
                raise invalid_json("expected a field name in double quotes")
            body.expect(b":", f"':' after field name {key!r}")
            if key == "mp3" and upload is None and body.peek() == ord('"'):
                upload = _base64_string(body, scratch_dir)
            elif key == "mp3" and upload is not None:
                raise invalid_json("field 'mp3' is given twice")
            else:
                fields[key], size = body.value(budget)
                budget -= size
            if len(fields) > MAX_FIELDS:
                raise BadRequest(f"the request has more than {MAX_FIELDS} fields", "invalid_json")
        body.pos += 1
        if body.peek() is not None:
            raise invalid_json("extra data after the JSON object")
    except BaseException:
        if upload:
            upload.discard()
        raise
    mp3 = fields.pop("mp3", None)
    if upload is None:
        if mp3 is None:
            raise BadRequest("'mp3' is missing: send the song as a base64 string", "missing_mp3")
        raise BadRequest("'mp3' must be a base64 string", "invalid_mp3")
    if upload.size == 0:
        upload.discard()
        raise BadRequest("'mp3' is empty", "missing_mp3")
    return fields, upload


def _not_an_object(body: _Body) -> BadRequest:
    """What is wrong with a body that does not start as an object, as `json.loads` says it when the body is
    small; a big one is not read further (it is no object, whatever else it is)."""
    while not body.ended and len(body.buffer) <= MAX_FIELD_BYTES:
        body.fill()
    if not body.ended:
        return BadRequest("request body must be a JSON object", "invalid_json")
    try:
        document = json.loads(body.buffer)
    except ValueError as error:
        return invalid_json(str(error))
    except RecursionError:
        return invalid_json("values nested too deeply")
    if isinstance(document, dict):  # json.loads also takes UTF-16 and 32, and a byte order mark
        return BadRequest("request body must be a JSON object in UTF-8, with no byte order mark", "invalid_json")
    return BadRequest("request body must be a JSON object", "invalid_json")


def _utf8_prefix(window: bytes) -> str:
    """The window as text, less a character its end cuts in two."""
    try:
        return window.decode()
    except UnicodeDecodeError as error:
        if error.reason != "unexpected end of data":
            raise
        return window[: error.start].decode()


def _cut_short(error: ValueError) -> bool:
    """Whether the JSON error may only mean the value goes on past the bytes at hand."""
    if not isinstance(error, json.JSONDecodeError):
        return False
    return error.msg.startswith("Unterminated string") or error.pos >= len(error.doc) - CUT_MARGIN


def _base64_string(body: _Body, scratch_dir: str | None) -> Upload:
    """Decode the JSON string at hand, base64 inside, to disk as it streams in."""
    body.pos += 1  # the opening quote
    with spool(scratch_dir) as (file, path):
        sink = Base64Sink(file)
        while True:
            stop = _string_stop(body.buffer, body.pos)
            if stop < 0:
                sink.write(body.buffer[body.pos :])
                body.pos = len(body.buffer)
                if not body.fill():
                    raise invalid_json("the body ends inside the 'mp3' string")
                continue
            sink.write(body.buffer[body.pos : stop])
            body.pos = stop + 1
            if body.buffer[stop] == ord('"'):
                break
            escape = body.need(1)[0]  # JSON may escape any character; only '/' is a base64 one in practice
            if escape == ord("u"):
                try:
                    sink.write(chr(int(body.need(5)[1:], 16)).encode("utf-8", "replace"))
                except ValueError:
                    raise invalid_json("a \\u escape without four hex digits in 'mp3'") from None
                body.pos += 5
            else:
                sink.write(ESCAPES.get(escape, b"\\"))
                body.pos += 1
        return sink.close(path)


def _string_stop(buffer: bytes, start: int) -> int:
    """Where a run of plain characters in a JSON string ends: its closing quote or an escape; -1 if not in
    `buffer`. Two memchr scans: a regex character class is ten times slower over megabytes."""
    quote = buffer.find(b'"', start)
    escape = buffer.find(b"\\", start, quote if quote >= 0 else len(buffer))
    return escape if escape >= 0 else quote
