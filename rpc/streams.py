"""A Submit call's client stream: read at a minimum rate, its header held to REST's size for fields, and the
song spooled to disk as it comes.

Rate: as REST reads a request body (rest/limits.py), each message is awaited only until the stream would fall
behind BODY_MIN_RATE bytes per second on average, after BODY_GRACE_SECONDS of slack, the message awaited counted
as a whole chunk; past it the call ends DEADLINE_EXCEEDED (`TooSlow`) and its spool file is removed. A stream
that sends a little and stalls holds only a coroutine, and only that long.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from msaas.errors import BadRequest, FieldTooLarge, TooSlow
from msaas.uploads import CHUNK, SongFile, Upload, spool, too_large
from msaas.v1 import separation_pb2 as pb
from rpc.blocking import Blocking
from rpc.guards import Malformed

# The header (options, callback and its data) may take what REST allows a request's fields together
# (rest/limits.py MAX_FIELD_BYTES); tests/test_rpc_limits.py holds the two equal.
MAX_HEADER_BYTES = 64 * 1024


class PacedStream:
    """The messages of a client stream, each awaited until the stream would fall behind `rate` bytes per second
    on average after `grace` seconds; past that, TooSlow."""

    def __init__(self, context: grpc.aio.ServicerContext, grace: float, rate: int) -> None:
        self.context, self.grace, self.rate = context, grace, rate
        self.started, self.received = time.monotonic(), 0

    async def read(self) -> pb.SubmitRequest | None:
        """The next message, or None at the end of the stream."""
        budget = self.started + self.grace + (self.received + CHUNK) / self.rate - time.monotonic()
        try:
            if budget <= 0:
                raise TimeoutError
            message = await asyncio.wait_for(self.context.read(), budget)
        except TimeoutError:
            raise TooSlow(
                f"the song arrived too slowly: a Submit stream must average {self.rate} bytes per second after "
                f"{self.grace:g} s (BODY_MIN_RATE, BODY_GRACE_SECONDS); send its chunks at a steady pace"
            ) from None
        if message is grpc.aio.EOF:
            return None
        if isinstance(message, Malformed):
            raise message.refusal()
        self.received += message.ByteSize()
        return message


def check_header(first: pb.SubmitRequest) -> None:
    if first.header.ByteSize() > MAX_HEADER_BYTES:
        raise FieldTooLarge(
            f"the header (options, callback, callback data) takes more than {MAX_HEADER_BYTES // 1024} KiB; "
            "it must fit in that, as REST's fields but 'mp3' must"
        )


async def receive_song(first: pb.SubmitRequest, stream: PacedStream, limit: int, scratch: str,
                       blocking: Blocking) -> Upload:
    """The song's chunks, from `first` to the end of the stream, in a spool file (hashed on the way, off the loop);
    TooLarge past `limit` bytes. However the call ends before, the file is removed."""
    with spool(scratch) as (file, path):
        song = SongFile(file)
        message: pb.SubmitRequest | None = first
        while message is not None:
            if message is not first and message.HasField("header"):
                raise BadRequest("the header (options, callback) goes in the first message only", "invalid_request")
            if song.size + len(message.chunk) > limit:
                raise too_large(limit)
            if message.chunk:
                await blocking(song.write, message.chunk)
            message = await stream.read()
    return song.upload(path)
