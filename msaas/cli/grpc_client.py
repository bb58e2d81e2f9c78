"""The gRPC API (proto/msaas/v1/separation.proto) behind the same methods as `Client`, so every command works
unchanged with `--server grpc://host:50051`; `separate` follows the song through the server-streamed watch
instead of polling. Needs grpcio and protobuf (requirements/rpc.txt); the CLI imports this module only for a
grpc:// server, so with REST it still needs nothing but the standard library."""

from __future__ import annotations

import datetime
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import grpc

from msaas.cli.client import CHUNK, MIX_TIMEOUT, TIMEOUT, ApiError
from msaas.errors import ERRORS
from msaas.options import SPEC, SPECS, text
from msaas.shapes import FIELDS, CallbackState, SongState
from msaas.v1 import separation_pb2 as pb
from msaas.v1 import separation_pb2_grpc as pb_grpc

# A gRPC status as the HTTP status REST would have answered, from the one table of errors (msaas/errors.py): it
# decides the exit code (msaas/cli/exits.py). Two statuses share RESOURCE_EXHAUSTED (413, 429): the first, 413, is
# taken; either exits SERVER.
HTTP_STATUS: dict[grpc.StatusCode, int] = {}
for _error in ERRORS:
    HTTP_STATUS.setdefault(getattr(grpc.StatusCode, _error.grpc_code), _error.http_status)
STATES = {value: name.removeprefix("STATE_").lower() for name, value in pb.SongStatus.State.items()}
WATCH_RETRIES = 3  # a watch cut by a server shutting down is called again (on another replica)


class GrpcClient:
    def __init__(self, server: str, api_key: str = "") -> None:
        self.server = server
        target = urllib.parse.urlsplit(server).netloc
        self.channel = grpc.insecure_channel(target)
        self.stub = pb_grpc.SeparationServiceStub(self.channel)
        self.admin = pb_grpc.AdminServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()

    def url(self, path: str, query: dict[str, str] | None = None) -> str:
        """A track's REST-style path (as `status` names tracks): `download` reads it back."""
        return path + (f"?{urllib.parse.urlencode(query)}" if query else "")

    def separate(self, song: Path, options: dict[str, str]) -> dict:
        """Stream the MP3 from disk in chunks; the options ride in the first message."""
        def messages() -> Iterator[pb.SubmitRequest]:
            with song.open("rb") as file:
                first = pb.SubmitRequest(header=pb.SubmitHeader(options=_options(options)), chunk=file.read(CHUNK))
                yield first
                while chunk := file.read(CHUNK):
                    yield pb.SubmitRequest(chunk=chunk)

        answer = self._call(self.stub.Submit, messages())
        return {"hash": answer.songhash, "reason": answer.reason, "options": _option_values(answer.options)}

    def status(self, songhash: str, options: dict[str, str]) -> dict:
        request = pb.StatusRequest(songhash=songhash, options=_options(options))
        return _status(self._call(self.stub.GetStatus, request, timeout=TIMEOUT))

    def watch(self, songhash: str, options: dict[str, str], interval: float, timeout: float | None) -> Iterator[dict]:
        """Each change of the song's status, pushed by the server, until it ends; stops at `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        request = pb.StatusRequest(songhash=songhash, options=_options(options))
        for attempt in range(WATCH_RETRIES + 1):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                for message in self.stub.WatchStatus(request, timeout=remaining, metadata=self.metadata):
                    yield _status(message)
                return
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    return
                if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == WATCH_RETRIES:
                    raise self._error(error) from None
                time.sleep(interval)

    def queue(self, cursor: str | None = None) -> dict:
        answer = self._call(self.stub.ListQueue, pb.ListQueueRequest(cursor=cursor or ""), timeout=TIMEOUT)
        return _page(answer)

    def usage(self) -> dict:
        answer = self._call(self.stub.GetUsage, pb.UsageRequest(), timeout=TIMEOUT)
        return {"tenant": answer.tenant, **_usage(answer)}

    def admin_usage(self) -> dict:
        answer = self._call(self.admin.ListUsage, pb.UsageRequest(), timeout=TIMEOUT)
        return {"tenants": {name: _usage(usage) for name, usage in answer.tenants.items()}}

    def dead_letters(self, cursor: str | None = None) -> dict:
        answer = self._call(self.admin.ListDeadLetters, pb.ListDeadLettersRequest(cursor=cursor or ""),
                            timeout=TIMEOUT)
        return {"dead": [_letter(letter) for letter in answer.dead], "next": answer.next_cursor or None}

    def dead_letter(self, entry_id: str) -> dict:
        return _letter(self._call(self.admin.GetDeadLetter, pb.DeadLetterRequest(id=entry_id), timeout=TIMEOUT))

    def retry_dead(self, entry_id: str) -> dict:
        answer = self._call(self.admin.RetryDeadLetter, pb.DeadLetterRequest(id=entry_id), timeout=TIMEOUT)
        return {"id": answer.id, "reason": answer.reason}

    def purge_dead(self, entry_id: str | None) -> dict:
        answer = self._call(self.admin.PurgeDeadLetters, pb.DeadLetterRequest(id=entry_id or ""), timeout=TIMEOUT)
        return {"purged": answer.purged}

    def download(self, path: str, destination: BinaryIO, query: dict[str, str] | None = None) -> int:
        """Stream a track, named by its REST path (`/apiv1/track/<songhash>/<track>`), into `destination`."""
        parts = urllib.parse.urlsplit(path)
        songhash, track = parts.path.rstrip("/").split("/")[-2:]
        options = {**dict(urllib.parse.parse_qsl(parts.query)), **(query or {})}
        request = pb.TrackRequest(songhash=songhash, track=track, options=_options(options))
        size = 0
        try:
            for part in self.stub.DownloadTrack(request, metadata=self.metadata):
                destination.write(part.chunk)
                size += len(part.chunk)
        except grpc.RpcError as error:
            raise self._error(error) from None
        return size

    def remove(self, songhash: str, track: str | None, options: dict[str, str]) -> dict:
        if track is None:
            answer = self._call(self.stub.RemoveSong, pb.SongRequest(songhash=songhash), timeout=TIMEOUT)
            return {"hash": answer.songhash, "removed": answer.removed, "cancelled": answer.cancelled,
                    "reason": answer.reason}
        request = pb.TrackRequest(songhash=songhash, track=track, options=_options(options))
        answer = self._call(self.stub.RemoveTrack, request, timeout=TIMEOUT)
        return {"hash": answer.songhash, "track": answer.track, "reason": answer.reason}

    def cancel(self, songhash: str) -> dict:
        answer = self._call(self.stub.CancelSong, pb.SongRequest(songhash=songhash), timeout=TIMEOUT)
        return {"hash": answer.songhash, "cancelled": answer.cancelled, "reason": answer.reason}

    def mix(self, songhash: str, options: dict[str, str], recipe: dict, destination: BinaryIO) -> dict:
        """Stream the mix `recipe` asks for into `destination`; what the server says of it (digest, cache)."""
        described: dict = {}
        try:
            for part in self.stub.RenderMix(_mix_request(songhash, options, recipe), timeout=MIX_TIMEOUT,
                                            metadata=self.metadata):
                if part.HasField("info"):
                    described = {"digest": part.info.digest, "cache": part.info.cache}
                destination.write(part.chunk)
        except grpc.RpcError as error:
            raise self._error(error) from None
        return described

    def mix_link(self, songhash: str, options: dict[str, str], recipe: dict) -> dict:
        """A link to the mix (valid 15 minutes), its size, digest and file name."""
        request = _mix_request(songhash, options, recipe)
        request.link = True
        try:
            info = next(iter(self.stub.RenderMix(request, timeout=MIX_TIMEOUT, metadata=self.metadata))).info
        except grpc.RpcError as error:
            raise self._error(error) from None
        return {name: getattr(info, name) for name in ("url", "size", "content_type", "digest", "filename", "cache")}

    def _call(self, method, request, timeout: float | None = None):
        try:
            return method(request, timeout=timeout, metadata=self.metadata)
        except grpc.RpcError as error:
            raise self._error(error) from None

    def _error(self, error: grpc.RpcError) -> ApiError:
        """The server's own errors carry REST's code in the trailing metadata; without it, the server was not
        reached (or something before it answered)."""
        code = dict(error.trailing_metadata() or ()).get("msaas-error")
        if code is None and error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return ApiError(0, "unreachable", f"cannot reach {self.server}: {error.details()}")
        return ApiError(HTTP_STATUS.get(error.code(), 500), code or error.code().name.lower(), error.details() or "")


def _options(values: dict[str, str]) -> pb.Options:
    """The CLI's options (text, as for REST's query) as the contract's typed fields."""
    return pb.Options(**{name: SPEC[name].parse(value) for name, value in values.items() if name in SPEC})


def _option_values(options: pb.Options) -> dict:
    return {spec.name: getattr(options, spec.name) if options.HasField(spec.name) else None for spec in SPECS}


def _mix_request(songhash: str, options: dict[str, str], recipe: dict) -> pb.MixRequest:
    return pb.MixRequest(songhash=songhash, options=_options(options), recipe=pb.MixRecipe(**recipe))


def _status(message: pb.SongStatus) -> dict:
    """A status as REST's status route answers it, field by field from the shape's table (msaas/shapes.py); tracks
    are named by their REST paths (see `download`)."""
    status: dict = {}
    for item in FIELDS:
        name = item.proto_name
        field = message.DESCRIPTOR.fields_by_name[name]
        present = message.HasField(name) if field.has_presence else True
        if item.name == "state":
            status["state"] = STATES[message.state]
        elif item.name == "options":
            status["options"] = _option_values(message.options)
        elif item.name == "timestamps":
            status["timestamps"] = {state: _iso(when) for state, when in message.timestamps.items()}
        elif item.name == "tracks":
            options = status["options"]
            query = urllib.parse.urlencode({key: text(value) for key, value in options.items()
                                            if value is not None and key != "preview"})
            status["tracks"] = {track: f"/apiv1/track/{message.songhash}/{track}.{options['format']}?{query}"
                                for track in message.tracks}
        elif item.name == "callback":
            if present:
                status["callback"] = {key: getattr(message.callback, key) for key in item.schema["properties"]}
        else:
            status[item.name] = getattr(message, name) if present else None
    song = SongState(status["hash"], status["state"], status["options"], tuple(message.tracks))
    shown = {item.name for item in FIELDS if item.shown(_as_shown(song, status))}
    return {name: value for name, value in status.items() if name in shown}


def _as_shown(song: SongState, status: dict) -> SongState:
    """Enough of the state to decide which fields REST would show (the rules are the shape's)."""
    callback = CallbackState(**status["callback"]) if "callback" in status else None
    return replace(song, reason=status.get("reason") or "", callback=callback,
                   ready_seconds=status.get("ready_seconds") or 0.0)


def _page(answer: pb.ListQueueResponse) -> dict:
    songs = [{"songhash": song.songhash, "state": song.state,
              "position": song.position if song.HasField("position") else None,
              "options": _option_values(song.options)} for song in answer.songs]
    return {"queue": list(answer.songhashes), "songs": songs, "next": answer.next_cursor or None}


def _usage(usage: pb.Usage) -> dict:
    return {"songs": usage.songs, "audio_seconds": usage.audio_seconds, "cpu_seconds": usage.cpu_seconds}


def _letter(letter: pb.DeadLetter) -> dict:
    return {"id": letter.id, "songhash": letter.songhash or None, "reason": letter.reason,
            "attempts": letter.attempts, "last_worker": letter.last_worker, "tenant": letter.tenant,
            "buried_at": _iso(letter.buried_at), "job": letter.job}


def _iso(timestamp) -> str:
    """A Timestamp as REST writes times (msaas/songs.py, DeadLetter.as_json): `...T19:31:10.901+00:00`."""
    return timestamp.ToDatetime(tzinfo=datetime.UTC).isoformat(timespec="milliseconds")
