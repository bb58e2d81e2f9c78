"""Receiving a song into a temporary file: from a raw body, a multipart field, base64 in JSON
(rest/json_body.py) or gRPC chunks (rpc/).

Every way in ends the same: the MP3 on disk (streamed there in chunks, hashed on the way), never held
in memory whole more than the request format forces.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pybase64

from msaas.errors import BadRequest, TooLarge, local_resources

CHUNK = 256 * 1024


@dataclass(frozen=True)
class Upload:
    path: str
    songhash: str
    size: int

    def discard(self) -> None:
        os.unlink(self.path)


@contextmanager
def spool(scratch_dir: str | None) -> Iterator[tuple[BinaryIO, str]]:
    """A temporary file in `scratch_dir` for the song; a full or read-only scratch space is LocalResourceError."""
    where = Path(scratch_dir or tempfile.gettempdir())
    if where.name.startswith("msaas-scratch-"):  # this process' own folder in WORK_DIR (msaas/scratch.py)
        where = where.parent
    with local_resources(f"WORK_DIR {where}"):
        fd, path = tempfile.mkstemp(suffix=".mp3", dir=scratch_dir)
        try:
            with os.fdopen(fd, "wb") as file:
                yield file, path
        except BaseException:
            os.unlink(path)
            raise


class SongFile:
    """The song going into its spool file, hashed and counted on the way."""

    def __init__(self, file: BinaryIO) -> None:
        self.file, self.digest, self.size = file, hashlib.sha224(), 0

    def write(self, song: bytes) -> None:
        self.size += len(song)
        self.digest.update(song)
        self.file.write(song)

    def upload(self, path: str) -> Upload:
        return Upload(path, self.digest.hexdigest(), self.size)


def from_stream(stream: BinaryIO, limit: int, scratch_dir: str | None) -> Upload:
    """Copy a raw request body to disk, hashing it on the way; 413 past `limit` bytes."""
    with spool(scratch_dir) as (file, path):
        song = SongFile(file)
        while chunk := stream.read(CHUNK):
            if song.size + len(chunk) > limit:
                raise too_large(limit)
            song.write(chunk)
    return song.upload(path)


def from_chunks(chunks: Iterable[bytes], limit: int, scratch_dir: str | None) -> Upload:
    """Copy a song sent in pieces (gRPC's client stream) to disk, hashing it on the way; TooLarge past `limit`."""
    with spool(scratch_dir) as (file, path):
        song = SongFile(file)
        for chunk in chunks:
            if song.size + len(chunk) > limit:
                raise too_large(limit)
            song.write(chunk)
    return song.upload(path)


def too_large(limit: int) -> TooLarge:
    return TooLarge(f"request body is larger than the limit of {limit} bytes", "too_large")


class Base64Sink:
    """Strict base64 however it is split, decoded as it comes into a `SongFile`."""

    def __init__(self, file: BinaryIO) -> None:
        self.song = SongFile(file)
        self.pending, self.padded = b"", False

    def write(self, text: bytes) -> None:
        data = self.pending + text
        whole = len(data) - len(data) % 4  # four characters decode on their own
        self.pending = data[whole:]
        if whole:
            self._decode(data[:whole])

    def close(self, path: str) -> Upload:
        if self.pending:
            self._decode(self.pending)
        return self.song.upload(path)

    def _decode(self, text: bytes) -> None:
        if self.padded:
            raise _invalid_base64("data after the '=' padding")
        try:
            song = pybase64.b64decode(text, validate=True)  # SIMD: a tenth of a millisecond per MB
        except (binascii.Error, ValueError):
            try:  # the standard decoder says better what is wrong
                base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError) as error:
                raise _invalid_base64(str(error)) from None
            raise _invalid_base64("a character outside the base64 alphabet") from None
        self.padded = text.endswith(b"=")
        self.song.write(song)


def _invalid_base64(why: str) -> BadRequest:
    return BadRequest(
        f"'mp3' is not valid base64 ({why}); send it on one line, e.g. `base64 -w0 song.mp3`", "invalid_base64"
    )
