"""Receiving a song: from base64 in JSON, a raw body or a multipart field, into a temporary file.

Every way in ends the same: the MP3 on disk (streamed there in chunks, hashed on the way), never held
in memory whole more than the request format forces.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from werkzeug.exceptions import RequestEntityTooLarge

from msaas.errors import BadRequest

CHUNK = 256 * 1024
BASE64_CHUNK = 4 * 64 * 1024  # a multiple of 4 characters decodes on its own


@dataclass(frozen=True)
class Upload:
    path: str
    songhash: str
    size: int


@contextmanager
def _spool(scratch_dir: str | None) -> Iterator[tuple[BinaryIO, str]]:
    fd, path = tempfile.mkstemp(suffix=".mp3", dir=scratch_dir)
    try:
        with os.fdopen(fd, "wb") as file:
            yield file, path
    except BaseException:
        os.unlink(path)
        raise


def from_stream(stream: BinaryIO, limit: int, scratch_dir: str | None) -> Upload:
    """Copy a raw request body to disk, hashing it on the way; 413 past `limit` bytes."""
    digest, size = hashlib.sha224(), 0
    with _spool(scratch_dir) as (file, path):
        while chunk := stream.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise RequestEntityTooLarge()
            digest.update(chunk)
            file.write(chunk)
    return Upload(path, digest.hexdigest(), size)


def from_base64(text: object, scratch_dir: str | None) -> Upload:
    """Decode the `mp3` field strictly, a slice at a time, to disk."""
    if text is None:
        raise BadRequest("'mp3' is missing: send the song as a base64 string", "missing_mp3")
    if not isinstance(text, str):
        raise BadRequest("'mp3' must be a base64 string", "invalid_mp3")
    if not text:
        raise BadRequest("'mp3' is empty", "missing_mp3")
    digest, size = hashlib.sha224(), 0
    with _spool(scratch_dir) as (file, path):
        try:
            for start in range(0, len(text), BASE64_CHUNK):
                chunk = base64.b64decode(text[start : start + BASE64_CHUNK], validate=True)
                size += len(chunk)
                digest.update(chunk)
                file.write(chunk)
        except (binascii.Error, ValueError) as error:
            raise BadRequest(
                f"'mp3' is not valid base64 ({error}); send it on one line, e.g. `base64 -w0 song.mp3`",
                "invalid_base64",
            ) from None
    return Upload(path, digest.hexdigest(), size)
