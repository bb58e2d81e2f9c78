"""The SeparationService of proto/msaas/v1/separation.proto: each call turned into `msaas.songs.Songs`' calls,
and their answers into the contract's messages. Every rule about songs is in Songs; `guarded` admits each
call and maps its errors (rpc/guards.py)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import grpc

from msaas.errors import BackendUnavailable, BadRequest
from msaas.naming import FORMATS
from msaas.scratch import claim
from msaas.settings import Settings
from msaas.songs import SONG_REMOVED, TRACK_REMOVED, Songs, cancel_reason
from msaas.uploads import from_chunks
from msaas.v1 import separation_pb2 as pb
from msaas.v1 import separation_pb2_grpc as pb_grpc
from rpc.guards import Guard, guarded
from rpc.messages import callback_value, option_values, status_message
from rpc.metrics import RpcMetrics

# How often a watch reads the song's status hash in Redis; it sends only what changed. Reading a hash
# (and the queue, while queued) three times a second per watcher is cheap, and needs no change to any writer.
WATCH_INTERVAL = 0.3


class SeparationServicer(pb_grpc.SeparationServiceServicer):
    def __init__(self, songs: Songs, guard: Guard, metrics: RpcMetrics, settings: Settings) -> None:
        self.songs = songs
        self.guard = guard
        self.metrics = metrics
        self.limit = settings.max_request_bytes
        # This process' own folder under WORK_DIR, as REST's: uploads spooled there by a process that was killed
        # are swept by the next one to start (msaas/scratch.py).
        self.scratch = str(claim(settings.work_dir, "rpc"))
        self.stopping = threading.Event()  # set on SIGTERM: watches end at once, so clients reconnect elsewhere

    @guarded
    def Submit(self, requests: Iterator[pb.SubmitRequest], context: grpc.ServicerContext) -> pb.SubmitResponse:
        first = next(requests, None) or pb.SubmitRequest()
        songs = self.songs
        # Options and callback are checked before the song is received: a refusal costs no upload.
        options = songs.options(option_values(first.header.options))
        callback = callback_value(first.header)
        callback = songs.callback(callback) if callback is not None else None
        upload = from_chunks(_chunks(first, requests), self.limit, self.scratch)
        try:
            submitted = songs.submit(upload, options, callback)
        finally:
            upload.discard()
        self.metrics.upload_bytes.observe(upload.size)
        if submitted.queued:
            self.metrics.jobs_enqueued.inc()
        return pb.SubmitResponse(songhash=submitted.songhash, reason=submitted.reason, queued=submitted.queued)

    @guarded
    def GetStatus(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.SongStatus:
        songs = self.songs
        return status_message(songs.describe(request.songhash, songs.options(option_values(request.options))))

    @guarded
    def WatchStatus(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> Iterator[pb.SongStatus]:
        """The status now, then each change, until the song ends or the call does (deadline, cancellation)."""
        songs = self.songs
        options = songs.options(option_values(request.options))
        sent = None
        while context.is_active():
            song = songs.describe(request.songhash, options)
            message = status_message(song)
            if message != sent:
                yield message
                sent = message
            if song.ended:
                return
            remaining = context.time_remaining()
            if self.stopping.wait(WATCH_INTERVAL if remaining is None else max(0.0, min(WATCH_INTERVAL, remaining))):
                raise BackendUnavailable("the server is shutting down; call WatchStatus again to go on watching")

    @guarded
    def ListQueue(self, request: pb.ListQueueRequest, context: grpc.ServicerContext) -> pb.ListQueueResponse:
        return pb.ListQueueResponse(songhashes=self.songs.waiting())

    @guarded
    def DownloadTrack(self, request: pb.TrackRequest, context: grpc.ServicerContext
                      ) -> Iterator[pb.DownloadTrackResponse]:
        songs = self.songs
        ref = songs.track(request.songhash, request.track, option_values(request.options))
        download = songs.open_track(ref)
        extension = ref.options.format
        chunks = iter(download)
        try:
            yield pb.DownloadTrackResponse(info=pb.TrackInfo(
                size=download.size, content_type=FORMATS[extension],
                filename=f"{ref.result.songhash}-{ref.track}.{extension}",
            ))
            for chunk in chunks:
                if not context.is_active():  # past the deadline, or cancelled: stop reading the store
                    return
                yield pb.DownloadTrackResponse(chunk=chunk)
        finally:
            chunks.close()  # closes the store's response at once, not when collected

    @guarded
    def GetTrackLink(self, request: pb.TrackRequest, context: grpc.ServicerContext) -> pb.TrackLink:
        songs = self.songs
        return pb.TrackLink(url=songs.track_link(songs.track(request.songhash, request.track,
                                                             option_values(request.options))))

    @guarded
    def RemoveTrack(self, request: pb.TrackRequest, context: grpc.ServicerContext) -> pb.RemoveTrackResponse:
        songs = self.songs
        ref = songs.track(request.songhash, request.track, option_values(request.options))
        songs.remove_track(ref)
        return pb.RemoveTrackResponse(songhash=ref.result.songhash, track=ref.track, reason=TRACK_REMOVED)

    @guarded
    def RemoveSong(self, request: pb.SongRequest, context: grpc.ServicerContext) -> pb.RemoveSongResponse:
        removed, cancelled = self.songs.remove(request.songhash)
        return pb.RemoveSongResponse(songhash=request.songhash.lower(), removed=removed, cancelled=cancelled,
                                     reason=SONG_REMOVED)

    @guarded
    def CancelSong(self, request: pb.SongRequest, context: grpc.ServicerContext) -> pb.CancelSongResponse:
        cancelled = self.songs.cancel(request.songhash)
        return pb.CancelSongResponse(songhash=request.songhash.lower(), cancelled=cancelled,
                                     reason=cancel_reason(cancelled))


def _chunks(first: pb.SubmitRequest, rest: Iterator[pb.SubmitRequest]) -> Iterator[bytes]:
    for message in itertools.chain([first], rest):
        if message is not first and message.HasField("header"):
            raise BadRequest("the header (options, callback) goes in the first message only", "invalid_request")
        yield message.chunk
