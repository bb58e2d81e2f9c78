"""What the gRPC tests share: a channel to the service, a song sent in chunks, and errors read back."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from msaas.v1 import separation_pb2 as pb
from msaas.v1 import separation_pb2_grpc as pb_grpc

CHUNK = 256 * 1024


def stub(address: str) -> pb_grpc.SeparationServiceStub:
    return pb_grpc.SeparationServiceStub(grpc.insecure_channel(address))


def requests(song: bytes, chunk: int = CHUNK, **header) -> Iterator[pb.SubmitRequest]:
    """The song in pieces of `chunk` bytes, the header (options, callback) in the first message."""
    first = pb.SubmitRequest(header=pb.SubmitHeader(**header))
    pieces = [song[start:start + chunk] for start in range(0, len(song), chunk)] or [b""]
    for index, piece in enumerate(pieces):
        message = first if index == 0 else pb.SubmitRequest()
        message.chunk = piece
        yield message


def error_code(error: grpc.RpcError) -> str:
    """REST's error code, which the service sends in the trailing metadata."""
    return dict(error.trailing_metadata() or ()).get("msaas-error", "")
