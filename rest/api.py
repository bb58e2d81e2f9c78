"""The routes of the wire contract (`/apiv1/...`), plus `/` and the health checks."""

from __future__ import annotations

import base64
import binascii
import json
import logging

import redis
from flask import Blueprint, Response, jsonify, request

from msaas.errors import BackendUnavailable, BadRequest, NotFound
from msaas.jobs import Callback, Job, check_model, check_songhash, parse_track, songhash_of
from msaas.mp3 import check_mp3
from msaas.status import FAILED, QUEUED
from rest.backends import backends

log = logging.getLogger(__name__)
blueprint = Blueprint("api", __name__)

INDEX = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Music Separation as a Service</title></head>
<body><h1>Music Separation as a Service</h1>
<p>Splits songs into vocals, drums, bass and other with Demucs.</p>
<ul>
<li><code>POST /apiv1/separate</code> &mdash;
  <code>{"mp3": "&lt;base64&gt;", "model": "...", "callback": {"url": "...", "data": {}}}</code></li>
<li><code>GET /apiv1/queue</code></li>
<li><code>GET /apiv1/track/&lt;songhash&gt;/&lt;track&gt;.mp3</code></li>
<li><code>DELETE /apiv1/remove/&lt;songhash&gt;/&lt;track&gt;.mp3</code></li>
</ul></body></html>
"""


@blueprint.get("/")
def index() -> Response:
    return Response(INDEX, mimetype="text/html")


@blueprint.get("/healthz")
def alive():
    return jsonify(status="ok")


@blueprint.get("/readyz")
def ready():
    """Ready when both Redis and the object store answer (Kubernetes readiness probe)."""
    services = backends()
    services.redis.ping()
    services.store.ensure_buckets()
    return jsonify(status="ready")


@blueprint.post("/apiv1/separate")
def separate():
    body = _json_object()
    mp3 = _decode_base64(body.get("mp3"))
    model = None if body.get("model") is None else check_model(body["model"])
    callback = None if body.get("callback") is None else Callback.parse(body["callback"])
    services = backends()
    check_mp3(mp3, scratch_dir=_scratch(services))
    job = Job(songhash_of(mp3), model, callback)

    already_stored = services.store.has_input(job.songhash)
    services.store.put_input(job.songhash, mp3)
    try:
        services.queue.push(job)
    except redis.RedisError as error:
        # Never leave an MP3 behind that no job will ever pick up.
        if not already_stored:
            services.store.remove_input(job.songhash)
        raise BackendUnavailable(f"the job queue (Redis) is unreachable; nothing was queued: {error}") from None
    _record(job.songhash, QUEUED)
    log.info("song %s enqueued (model %s, callback %s)", job.songhash, model or "default", bool(callback))
    return jsonify(hash=job.songhash, reason="Song enqueued for separation")


@blueprint.get("/apiv1/queue")
@blueprint.get("/apiv1/queue/")
def queue():
    return jsonify(queue=[job.songhash for job in backends().queue.waiting()])


@blueprint.get("/apiv1/track/<songhash>/<track>")
def track(songhash: str, track: str):
    songhash, track = check_songhash(songhash), parse_track(track)
    services = backends()
    try:
        download = services.store.open_output(songhash, track)
    except NotFound:
        raise NotFound(_why_missing(songhash, track), "track_not_found") from None
    return Response(
        download,
        mimetype="audio/mpeg",
        headers={
            "Content-Length": str(download.size),
            "Content-Disposition": f'inline; filename="{songhash}-{track}.mp3"',
        },
    )


@blueprint.route("/apiv1/remove/<songhash>/<track>", methods=["GET", "DELETE"])
def remove(songhash: str, track: str):
    songhash, track = check_songhash(songhash), parse_track(track)
    try:
        backends().store.remove_output(songhash, track)
    except NotFound:
        raise NotFound(f"there is no track {track} of song {songhash} to remove", "track_not_found") from None
    log.info("song %s: track %s removed", songhash, track)
    return jsonify(hash=songhash, track=track, reason="Track removed")


def _json_object() -> dict:
    try:
        body = json.loads(request.get_data(cache=False))
    except ValueError as error:
        raise BadRequest(f"request body is not valid JSON: {error}", "invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object", "invalid_json")
    return body


def _decode_base64(value: object) -> bytes:
    if value is None:
        raise BadRequest("'mp3' is missing: send the song as a base64 string", "missing_mp3")
    if not isinstance(value, str):
        raise BadRequest("'mp3' must be a base64 string", "invalid_mp3")
    if not value:
        raise BadRequest("'mp3' is empty", "missing_mp3")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        raise BadRequest(
            f"'mp3' is not valid base64 ({error}); send it on one line, e.g. `base64 -w0 song.mp3`",
            "invalid_base64",
        ) from None


def _scratch(services) -> str | None:
    work_dir = services.settings.work_dir
    return str(work_dir) if work_dir else None


def _record(songhash: str, state: str) -> None:
    """Status is a courtesy to users: losing it must not fail a request whose job is already queued."""
    try:
        backends().status.set(songhash, state)
    except redis.RedisError as error:
        log.warning("song %s: could not record state %s: %s", songhash, state, error)


def _why_missing(songhash: str, track: str) -> str:
    try:
        status = backends().status.get(songhash)
    except redis.RedisError:
        status = {}
    state = status.get("state")
    if state == FAILED:
        return f"track {track} of song {songhash} does not exist: separation failed: {status.get('reason')}"
    if state:
        return f"track {track} of song {songhash} is not ready yet: the song is {state}"
    return f"track {track} of song {songhash} does not exist"
