"""The SeparationService of proto/msaas/v1/separation.proto: each call turned into `msaas.songs.Songs`' calls,
and their answers into the contract's messages. Every rule about songs is in Songs; `guarded` admits each
call and maps its errors (rpc/guards.py). Songs' calls block (Redis, the object store, the upload check), so
they run on the blocking pool (rpc/blocking.py); a call waiting on them, or on its client, holds a coroutine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing

import grpc

from msaas.jobs import Callback
from msaas.mixes import Mixes
from msaas.models import catalogue
from msaas.naming import FORMATS
from msaas.options import Options
from msaas.scratch import claim
from msaas.settings import Settings
from msaas.songs import QUEUE_PAGE, SONG_REMOVED, TRACK_REMOVED, Songs, Submitted, cancel_reason
from msaas.storage import Download
from msaas.tenants import Tenant
from msaas.uploads import Upload
from msaas.v1 import separation_pb2 as pb
from msaas.v1 import separation_pb2_grpc as pb_grpc
from rpc.blocking import Blocking
from rpc.guards import Guard, guarded, tenant
from rpc.messages import callback_value, option_values, options_message, status_message, usage_message
from rpc.metrics import RpcMetrics
from rpc.mixes import MixMethods
from rpc.streams import PacedStream, check_header, receive_song
from rpc.watches import Watches


class SeparationServicer(MixMethods, pb_grpc.SeparationServiceServicer):
    def __init__(self, songs: Songs, guard: Guard, metrics: RpcMetrics, settings: Settings, blocking: Blocking,
                 watches: Watches) -> None:
        self.songs = songs
        self.guard = guard
        self.metrics = metrics
        self.blocking = blocking
        self.watches = watches
        self.limit = settings.max_request_bytes
        self.default_model = settings.demucs_model
        self.grace, self.rate = settings.body_grace_seconds, settings.body_min_rate
        # This process' own folder under WORK_DIR, as REST's: uploads spooled there by a process that was killed
        # are swept by the next one to start (msaas/scratch.py).
        self.scratch = str(claim(settings.work_dir, "rpc"))
        self.mixes = Mixes(songs, settings.work_dir, settings.store_timeout)  # RenderMix, GetWaveform (rpc/mixes.py)

    @guarded
    async def Submit(self, requests: AsyncIterator[pb.SubmitRequest], context: grpc.aio.ServicerContext
                     ) -> pb.SubmitResponse:
        stream = PacedStream(context, self.grace, self.rate)
        first = await stream.read() or pb.SubmitRequest()
        check_header(first)
        songs = self.songs
        # Options and callback are checked before the song is received: a refusal costs no upload.
        options = songs.options(option_values(first.header.options))
        callback = callback_value(first.header)
        callback = songs.callback(callback) if callback is not None else None
        upload = await receive_song(first, stream, self.limit, self.scratch, self.blocking)
        submitted = await self.blocking(_submit, songs, tenant(), upload, options, callback)
        self.metrics.upload_bytes.observe(upload.size)
        if submitted.queued:
            self.metrics.jobs_enqueued.inc()
        return pb.SubmitResponse(songhash=submitted.songhash, reason=submitted.reason, queued=submitted.queued,
                                 options=options_message(submitted.options.as_fields()))

    @guarded
    async def GetStatus(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.SongStatus:
        songs = self.songs
        options = songs.options(option_values(request.options))
        return status_message(await self.blocking(songs.describe, tenant(), request.songhash, options))

    @guarded
    async def WatchStatus(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> None:
        """The status now, then each change, until the song ends or the call does (deadline, cancellation)."""
        options = self.songs.options(option_values(request.options))
        async with aclosing(self.watches.follow(tenant(), request.songhash, options)) as statuses:
            async for message in statuses:
                await context.write(message)

    @guarded
    async def ListQueue(self, request: pb.ListQueueRequest, context: grpc.aio.ServicerContext
                        ) -> pb.ListQueueResponse:
        songs = self.songs
        page = await self.blocking(songs.queue_page, tenant(), request.cursor or None, request.limit or QUEUE_PAGE)
        listed = [pb.QueuedSong(songhash=song.songhash, state=song.state, position=song.position,
                                options=options_message(song.options)) for song in page.songs]
        return pb.ListQueueResponse(songhashes=page.waiting, songs=listed, next_cursor=page.cursor or "")

    @guarded
    async def GetUsage(self, request: pb.UsageRequest, context: grpc.aio.ServicerContext) -> pb.Usage:
        asking = tenant()
        return usage_message(asking.name, await self.blocking(self.songs.claims.usage, asking.name))

    @guarded
    async def ListModels(self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
                         ) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(models=[pb.Model(**model) for model in catalogue(self.default_model)])

    @guarded
    async def DownloadTrack(self, request: pb.TrackRequest, context: grpc.aio.ServicerContext) -> None:
        """The track, or while the song is processing the part ready so far (`info.ready_seconds`)."""
        songs = self.songs
        ref = songs.track(request.songhash, request.track, option_values(request.options))
        opened = await self.blocking(songs.open_track, tenant(), ref)
        download, extension = opened.download, ref.options.format
        chunks = iter(download)
        try:
            await context.write(pb.DownloadTrackResponse(info=pb.TrackInfo(
                size=download.size, content_type=FORMATS[extension],
                filename=f"{ref.result.songhash}-{ref.track}.{extension}", ready_seconds=opened.ready_seconds,
            )))
            # Each chunk read from the store off the loop; each write waits for the client (flow control).
            while (chunk := await self.blocking(next, chunks, None)) is not None:
                await context.write(pb.DownloadTrackResponse(chunk=chunk))
        finally:
            _close(chunks, download)  # the store's response, at once, not when collected

    @guarded
    async def GetTrackLink(self, request: pb.TrackRequest, context: grpc.aio.ServicerContext) -> pb.TrackLink:
        songs = self.songs
        ref = songs.track(request.songhash, request.track, option_values(request.options))
        return pb.TrackLink(url=await self.blocking(songs.track_link, tenant(), ref))

    @guarded
    async def RemoveTrack(self, request: pb.TrackRequest, context: grpc.aio.ServicerContext
                          ) -> pb.RemoveTrackResponse:
        songs = self.songs
        ref = songs.track(request.songhash, request.track, option_values(request.options))
        await self.blocking(songs.remove_track, tenant(), ref)
        return pb.RemoveTrackResponse(songhash=ref.result.songhash, track=ref.track, reason=TRACK_REMOVED)

    @guarded
    async def RemoveSong(self, request: pb.SongRequest, context: grpc.aio.ServicerContext) -> pb.RemoveSongResponse:
        removed, cancelled = await self.blocking(self.songs.remove, tenant(), request.songhash)
        return pb.RemoveSongResponse(songhash=request.songhash.lower(), removed=removed, cancelled=cancelled,
                                     reason=SONG_REMOVED)

    @guarded
    async def CancelSong(self, request: pb.SongRequest, context: grpc.aio.ServicerContext) -> pb.CancelSongResponse:
        cancelled = await self.blocking(self.songs.cancel, tenant(), request.songhash)
        return pb.CancelSongResponse(songhash=request.songhash.lower(), cancelled=cancelled,
                                     reason=cancel_reason(cancelled))


def _submit(songs: Songs, asking: Tenant, upload: Upload, options: Options, callback: Callback | None) -> Submitted:
    """Submit, then remove the spool file, in one thread: a call cancelled meanwhile cannot remove it early."""
    try:
        return songs.submit(asking, upload, options, callback)
    finally:
        upload.discard()


def _close(chunks: Iterator[bytes], download: Download) -> None:
    """Close a download now (a socket's close: it does not block)."""
    try:
        chunks.close()
    except ValueError:  # still reading in another thread (the call was cancelled mid-read): cut the read short
        download.response.close()
