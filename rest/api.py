"""The routes of the wire contract (`/apiv1/...`), plus `/` and the health checks."""

from __future__ import annotations

import datetime
import logging
import os

import redis
from flask import Blueprint, Response, jsonify, redirect, render_template, request, url_for

from msaas.callbacks import check_callback_url
from msaas.errors import BadRequest, NotFound
from msaas.jobs import (
    DEFAULT_BITRATE,
    FORMATS,
    MODEL_TRACKS,
    MP3_BITRATES,
    Callback,
    Options,
    check_songhash,
    parse_track,
    result_id,
)
from msaas.status import DONE, FAILED, PROCESSING, QUEUED
from rest.backends import backends
from rest.json_body import read_json
from rest.openapi import document
from rest.submission import submit
from rest.uploads import from_stream

log = logging.getLogger(__name__)
blueprint = Blueprint("api", __name__)

RAW_TYPES = ("audio/mpeg", "audio/mp3", "application/octet-stream")


@blueprint.get("/")
def index() -> str:
    """The web page (rest/templates, rest/static); always a 200 without Redis or the store, for load balancers."""
    settings = backends().settings
    return render_template(
        "index.html",
        models=list(MODEL_TRACKS),
        model_tracks=MODEL_TRACKS,
        default_model=settings.demucs_model,
        formats=list(FORMATS),
        bitrates=MP3_BITRATES,
        default_bitrate=DEFAULT_BITRATE,
        keys_required=bool(settings.api_keys),
    )


@blueprint.get("/healthz")
def alive():
    return jsonify(status="ok")


@blueprint.get("/readyz")
def ready():
    """Ready when both Redis and the object store answer, the buckets there (made again if the store lost
    them) (Kubernetes readiness probe)."""
    services = backends()
    services.redis.ping()
    services.store.ensure_buckets(recheck=True)
    return jsonify(status="ready")


@blueprint.get("/apiv1/openapi.json")
def openapi():
    return jsonify(document())


@blueprint.post("/apiv1/separate")
def separate():
    services = backends()
    settings = services.settings
    scratch = str(settings.work_dir) if settings.work_dir else None
    if request.mimetype in RAW_TYPES:
        fields: dict = request.args.to_dict()
        upload = from_stream(request.stream, settings.max_request_bytes, scratch)
    elif request.mimetype == "multipart/form-data":
        fields = {**request.form.to_dict(), **request.args.to_dict()}
        if "mp3" not in request.files:
            raise BadRequest("multipart body has no file field 'mp3'", "missing_mp3")
        upload = from_stream(request.files["mp3"].stream, settings.max_request_bytes, scratch)
    else:  # JSON, whatever the client called it: the reference clients say application/json
        fields, upload = read_json(request.stream, settings.max_request_bytes, scratch)
    try:
        if upload.size == 0:
            raise BadRequest("mp3 is empty", "missing_mp3")
        options = Options.parse(fields, settings.demucs_model)
        reason = submit(services, upload, options, _callback(fields))
    finally:
        os.unlink(upload.path)
    return jsonify(hash=upload.songhash, reason=reason)


@blueprint.get("/apiv1/queue")
@blueprint.get("/apiv1/queue/")
def queue():
    return jsonify(queue=[job.songhash for job in backends().queue.waiting()])


@blueprint.get("/apiv1/status/<songhash>")
def status(songhash: str):
    songhash = check_songhash(songhash)
    services = backends()
    options = _query_options()
    result = result_id(songhash, options)
    fields = services.status.get(result)
    if not fields:
        raise NotFound(f"song {songhash} has not been submitted with these options", "song_not_found")
    state = fields["state"]
    body: dict = {
        "hash": songhash,
        "state": state,
        "options": {"model": options.model or services.settings.demucs_model, **_public(options)},
        "attempts": int(fields.get("attempts") or 0),
        "timestamps": {
            name: _iso(fields[f"{name}_at"]) for name in (QUEUED, PROCESSING, DONE, FAILED) if f"{name}_at" in fields
        },
    }
    if fields.get("reason"):
        body["reason"] = fields["reason"]
    if state == QUEUED:
        body["position"] = _position(services, result)
    elif state == PROCESSING:
        body["progress"] = float(fields.get("progress") or 0)
        body["worker"] = fields.get("worker", "")
    elif state == DONE:
        body["tracks"] = {
            track: url_for(
                "api.track", songhash=songhash, track=f"{track}.{options.format}", _external=True,
                **options.as_query(),
            )
            for track in options.tracks(services.settings.demucs_model)
        }
    if "callback" in fields:
        delivered = fields.get("callback_delivered") == "true"
        body["callback"] = {
            # pending until the worker's delivery threads have delivered it or given up
            "state": fields.get("callback_state") or ("delivered" if delivered else "failed"),
            "delivered": delivered,
            "attempts": int(fields.get("callback_attempts") or 0),
            "outcome": fields["callback"],
        }
    return jsonify(body)


@blueprint.get("/apiv1/track/<songhash>/<track>")
def track(songhash: str, track: str):
    songhash = check_songhash(songhash)
    track, extension = parse_track(track)
    options = _query_options(extension)
    services = backends()
    try:
        if request.args.get("redirect") in ("1", "true", "yes"):
            return redirect(services.store.output_link(songhash, track, options), code=302)
        download = services.store.open_output(songhash, track, options)
    except NotFound:
        raise NotFound(_why_missing(songhash, track, options), "track_not_found") from None
    return Response(
        download,
        mimetype=FORMATS[options.format],
        headers={
            "Content-Length": str(download.size),
            "Content-Disposition": f'inline; filename="{songhash}-{track}.{options.format}"',
        },
    )


@blueprint.route("/apiv1/remove/<songhash>/<track>", methods=["GET", "DELETE"])
def remove(songhash: str, track: str):
    songhash = check_songhash(songhash)
    track, extension = parse_track(track)
    options = _query_options(extension)
    services = backends()
    try:
        services.store.remove_output(songhash, track, options)
    except NotFound:
        raise NotFound(f"there is no track {track} of song {songhash} to remove", "track_not_found") from None
    services.status.forget_done(result_id(songhash, options))  # no longer whole: a new submission redoes it
    log.info("song %s: track %s removed", songhash, track)
    return jsonify(hash=songhash, track=track, reason="Track removed")


@blueprint.delete("/apiv1/remove/<songhash>")
def remove_song(songhash: str):
    """Every track of the song, whatever its options, its input, and its status."""
    songhash = check_songhash(songhash)
    services = backends()
    removed = services.store.remove_song(songhash)
    if not services.status.forget(songhash) and not removed:
        raise NotFound(f"there is nothing stored for song {songhash}", "song_not_found")
    log.info("song %s removed (%d objects)", songhash, removed)
    return jsonify(hash=songhash, removed=removed, reason="Song removed")


def _callback(fields: dict) -> Callback | None:
    if fields.get("callback") is not None:
        callback = Callback.parse(fields["callback"])
    elif fields.get("callback_url"):  # raw and multipart uploads name the callback in the query
        callback = Callback.parse({"url": fields["callback_url"]})
    else:
        return None
    # Refuse private targets now, where the client hears why; the worker checks again when it connects.
    check_callback_url(callback.url, backends().settings.callback_allow_hosts)
    return callback


def _query_options(extension: str | None = None) -> Options:
    """Options selecting a result on the read routes; a track's extension implies its format."""
    fields = request.args.to_dict()
    if extension and "format" not in fields:
        fields["format"] = extension
    options = Options.parse(fields, backends().settings.demucs_model)
    if extension and extension != options.format:
        raise BadRequest(f"track extension .{extension} does not match format {options.format}", "invalid_track")
    return options


def _public(options: Options) -> dict:
    return {"two_stems": options.two_stems, "format": options.format, "mp3_bitrate": options.mp3_bitrate}


def _iso(timestamp: str) -> str:
    return datetime.datetime.fromtimestamp(float(timestamp), datetime.UTC).isoformat(timespec="milliseconds")


def _position(services, result: str) -> int | None:
    """1 for the next job a worker takes; None when the job is not waiting (a worker has it)."""
    for position, job in enumerate(services.queue.waiting(), start=1):
        if result_id(job.songhash, job.options) == result:
            return position
    return None


def _why_missing(songhash: str, track: str, options: Options) -> str:
    services = backends()
    result = result_id(songhash, options)
    try:
        status = services.status.get(result)
        # One of a finished result's tracks is gone (removed or expired behind the service's back): forget it
        # was done, or repeats of the song would be told its tracks are ready.
        if track in options.tracks(services.settings.demucs_model) and services.status.forget_done(result):
            return f"track {track} of song {songhash} is no longer stored; submit the song again to separate it again"
    except redis.RedisError:
        status = {}
    state = status.get("state")
    if state == FAILED:
        return f"track {track} of song {songhash} does not exist: separation failed: {status.get('reason')}"
    if state in (QUEUED, PROCESSING):
        return f"track {track} of song {songhash} is not ready yet: the song is {state}"
    return f"track {track} of song {songhash} does not exist"
