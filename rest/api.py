"""The routes of the wire contract (`/apiv1/...`), plus `/` and the health checks: HTTP in and out of
`msaas.songs.Songs`, which holds every rule about songs."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, redirect, render_template, request, url_for
from werkzeug.exceptions import RequestEntityTooLarge

from msaas.errors import BadRequest
from msaas.models import MODELS, stems_of
from msaas.naming import FORMATS
from msaas.options import SPECS
from msaas.scratch import claim
from msaas.songs import SONG_REMOVED, TRACK_REMOVED, SongState, cancel_reason
from msaas.uploads import from_stream
from rest.backends import backends
from rest.json_body import read_json
from rest.limits import MAX_FORM_PARTS, check_fields, field_too_large
from rest.openapi import document

blueprint = Blueprint("api", __name__)

RAW_TYPES = ("audio/mpeg", "audio/mp3", "application/octet-stream")


@blueprint.get("/")
def index() -> str:
    """The web page (rest/templates, rest/static); always a 200 without Redis or the store, for load balancers."""
    settings = backends().settings
    return render_template(
        "index.html",
        options=SPECS,
        model_tracks={name: stems_of(name) for name in MODELS},
        default_model=settings.demucs_model,
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
    scratch = str(claim(settings.work_dir, "rest"))
    if request.mimetype in RAW_TYPES:
        fields: dict = request.args.to_dict()
        upload = from_stream(request.stream, settings.max_request_bytes, scratch)
    elif request.mimetype == "multipart/form-data":
        fields = {**_form_fields(settings.max_request_bytes), **request.args.to_dict()}
        if "mp3" not in request.files:
            raise BadRequest("multipart body has no file field 'mp3'", "missing_mp3")
        upload = from_stream(request.files["mp3"].stream, settings.max_request_bytes, scratch)
    else:  # JSON, whatever the client called it: the reference clients say application/json
        fields, upload = read_json(request.stream, settings.max_request_bytes, scratch)
    try:
        songs = services.songs
        options = songs.options(fields)
        submitted = songs.submit(upload, options, _callback(fields))
    finally:
        upload.discard()
    services.metrics.upload_bytes.observe(upload.size)
    if submitted.queued:
        services.metrics.jobs_enqueued.inc()
    return jsonify(hash=submitted.songhash, reason=submitted.reason)


@blueprint.get("/apiv1/queue")
@blueprint.get("/apiv1/queue/")
def queue():
    return jsonify(queue=backends().songs.waiting())


@blueprint.get("/apiv1/status/<songhash>")
def status(songhash: str):
    songs = backends().songs
    return jsonify(status_body(songs.describe(songhash, songs.options(request.args.to_dict()))))


def status_body(song: SongState) -> dict:
    """A status as the API has always answered it; `options` are those the job was accepted with."""
    body: dict = {
        "hash": song.songhash,
        "state": song.state,
        "options": song.options.as_fields(),
        "attempts": song.attempts,
        "timestamps": song.timestamps,
    }
    if song.reason:
        body["reason"] = song.reason
    if song.state == "queued":
        body["position"] = song.position
    elif song.state == "processing":
        body["progress"] = song.progress
        body["worker"] = song.worker
    elif song.state == "done":
        query = song.options.as_query() if song.result.tag else {}
        body["tracks"] = {track: _public_url("api.track", songhash=song.songhash,
                                             track=f"{track}.{song.options.format}", **query)
                          for track in song.tracks}
    if song.callback is not None:
        body["callback"] = song.callback
    return body


@blueprint.get("/apiv1/track/<songhash>/<track>")
def track(songhash: str, track: str):
    songs = backends().songs
    ref = songs.track(songhash, track, _query())
    if request.args.get("redirect") in ("1", "true", "yes"):
        return redirect(songs.track_link(ref), code=302)
    download = songs.open_track(ref)
    return Response(
        download,
        mimetype=FORMATS[ref.options.format],
        headers={
            "Content-Length": str(download.size),
            "Content-Disposition": f'inline; filename="{ref.result.songhash}-{ref.track}.{ref.options.format}"',
        },
    )


@blueprint.route("/apiv1/remove/<songhash>/<track>", methods=["GET", "DELETE"])
def remove(songhash: str, track: str):
    songs = backends().songs
    ref = songs.track(songhash, track, _query())
    songs.remove_track(ref)
    return jsonify(hash=ref.result.songhash, track=ref.track, reason=TRACK_REMOVED)


@blueprint.delete("/apiv1/remove/<songhash>")
def remove_song(songhash: str):
    """Cancel the song's jobs, and remove every track of it, whatever its options, its input and its status."""
    removed, cancelled = backends().songs.remove(songhash)
    return jsonify(hash=songhash.lower(), removed=removed, cancelled=cancelled, reason=SONG_REMOVED)


@blueprint.post("/apiv1/cancel/<songhash>")
def cancel(songhash: str):
    """Stop the song's queued and processing jobs; finished results stay."""
    cancelled = backends().songs.cancel(songhash)
    return jsonify(hash=songhash.lower(), cancelled=cancelled, reason=cancel_reason(cancelled))


def _form_fields(limit: int) -> dict:
    """A multipart body's fields but the file; werkzeug refuses a big one as it streams (MAX_FORM_MEMORY_SIZE)."""
    try:
        form = request.form
    except RequestEntityTooLarge:
        if (request.content_length or 0) > limit:
            raise
        raise field_too_large(f"the form's fields besides 'mp3' (at most {MAX_FORM_PARTS} parts)") from None
    check_fields(form.items(multi=True), "the form's fields besides 'mp3'")
    return form.to_dict()


def _callback(fields: dict):
    songs = backends().songs
    if fields.get("callback") is not None:
        return songs.callback(fields["callback"])
    if fields.get("callback_url"):  # raw and multipart uploads name the callback in the query
        return songs.callback({"url": fields["callback_url"]})
    return None


def _query() -> dict:
    return {spec.name: request.args[spec.name] for spec in SPECS if spec.name in request.args}


def _public_url(endpoint: str, **values) -> str:
    """An absolute link: under PUBLIC_URL when set, so no request's Host header can redirect clients elsewhere."""
    public = backends().settings.public_url
    if public:
        return public.rstrip("/") + url_for(endpoint, **values)
    return url_for(endpoint, _external=True, **values)

