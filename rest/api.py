"""The routes of the wire contract (`/apiv1/...`), plus `/` and the health checks: HTTP in and out of
`msaas.songs.Songs`, which holds every rule about songs."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, redirect, render_template, request, url_for
from werkzeug.exceptions import RequestEntityTooLarge

from msaas.errors import BadRequest
from msaas.models import MODELS, stems_of
from msaas.naming import FORMATS
from msaas.options import SPECS, text
from msaas.scratch import claim
from msaas.shapes import SongState, as_json
from msaas.songs import QUEUE_PAGE, SONG_REMOVED, TRACK_REMOVED, cancel_reason
from msaas.uploads import from_stream
from rest.backends import backends, tenant
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
        keys_required=not backends().tenants.current().open,
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
        submitted = songs.submit(tenant(), upload, options, _callback(fields))
    finally:
        upload.discard()
    services.metrics.upload_bytes.observe(upload.size)
    services.metrics.submitted(tenant().name)
    if submitted.queued:
        services.metrics.jobs_enqueued.inc()
    return jsonify(hash=submitted.songhash, reason=submitted.reason, options=submitted.options.as_fields())


@blueprint.get("/apiv1/queue")
@blueprint.get("/apiv1/queue/")
def queue():
    """The tenant's songs waiting for a worker, next first (`queue`, the reference's listing), and its songs queued
    or processing with their places (`songs`), a page at a time: `next` is the `cursor` of the next page."""
    limit = _count_arg("limit", QUEUE_PAGE)
    page = backends().songs.queue_page(tenant(), request.args.get("cursor"), limit)
    return jsonify(queue=page.waiting, next=page.cursor,
                   songs=[{"songhash": song.songhash, "state": song.state, "position": song.position,
                           "options": song.options} for song in page.songs])


@blueprint.get("/apiv1/status/<songhash>")
def status(songhash: str):
    songs = backends().songs
    return jsonify(status_body(songs.describe(tenant(), songhash, songs.options(request.args.to_dict()))))


def status_body(song: SongState) -> dict:
    """A status as the API answers it (msaas/shapes.py); tracks are links to the track route."""
    # The options name the result (a preview by its range); the plain result's links need none. Read as they are
    # recorded, not resolved again: a model outside the catalogue (DEMUCS_REPO) is the service's own default.
    named = {name: value for name, value in song.options.items() if name != "preview"}
    plain = {name: value for name, value in backends().songs.options({}).as_fields().items() if name != "preview"}
    query = {} if named == plain else {name: text(value) for name, value in named.items() if value is not None}
    return as_json(song, lambda track: _public_url("api.track", songhash=song.songhash,
                                                  track=f"{track}.{song.options['format']}", **query))


@blueprint.get("/apiv1/usage")
def usage():
    """What the tenant asking has used: songs submitted, audio seconds separated, separation CPU-seconds."""
    asking = tenant()
    return jsonify(tenant=asking.name, **backends().claims.usage(asking.name))


@blueprint.get("/apiv1/track/<songhash>/<track>")
def track(songhash: str, track: str):
    songs = backends().songs
    ref = songs.track(songhash, track, _query())
    if request.args.get("redirect") in ("1", "true", "yes"):
        return redirect(songs.track_link(tenant(), ref), code=302)
    opened = songs.open_track(tenant(), ref)
    headers = {
        "Content-Length": str(opened.download.size),
        "Content-Disposition": f'inline; filename="{ref.result.songhash}-{ref.track}.{ref.options.format}"',
    }
    if opened.ready_seconds is not None:  # the part ready so far: never cached as the whole
        headers |= {"X-Ready-Seconds": f"{opened.ready_seconds:.3f}", "Cache-Control": "no-store"}
    return Response(opened.download, mimetype=FORMATS[ref.options.format], headers=headers)


@blueprint.route("/apiv1/remove/<songhash>/<track>", methods=["GET", "DELETE"])
def remove(songhash: str, track: str):
    songs = backends().songs
    ref = songs.track(songhash, track, _query())
    songs.remove_track(tenant(), ref)
    return jsonify(hash=ref.result.songhash, track=ref.track, reason=TRACK_REMOVED)


@blueprint.delete("/apiv1/remove/<songhash>")
def remove_song(songhash: str):
    """Cancel the song's jobs, and remove every track of it, whatever its options, its input and its status."""
    removed, cancelled = backends().songs.remove(tenant(), songhash)
    return jsonify(hash=songhash.lower(), removed=removed, cancelled=cancelled, reason=SONG_REMOVED)


@blueprint.post("/apiv1/cancel/<songhash>")
def cancel(songhash: str):
    """Stop the song's queued and processing jobs; finished results stay."""
    cancelled = backends().songs.cancel(tenant(), songhash)
    return jsonify(hash=songhash.lower(), cancelled=cancelled, reason=cancel_reason(cancelled))


def _form_fields(limit: int) -> dict:
    """A multipart body's fields but the file; werkzeug refuses a big one as it streams (MAX_FORM_MEMORY_SIZE)."""
    try:
        form = request.form
    except RequestEntityTooLarge:
        if (request.content_length or 0) > limit:
            raise
        raise field_too_large(f"the form's fields besides 'mp3' (at most {MAX_FORM_PARTS} parts)") from None
    if None in form or None in request.files:  # a Content-Disposition whose name werkzeug could not read
        raise BadRequest("a part of the multipart body has no readable name in its Content-Disposition",
                         "invalid_body")
    check_fields(form.items(multi=True), "the form's fields besides 'mp3'")
    return form.to_dict()


def _callback(fields: dict):
    songs = backends().songs
    if fields.get("callback") is not None:
        return songs.callback(fields["callback"])
    if fields.get("callback_url"):  # raw and multipart uploads name the callback in the query
        return songs.callback({"url": fields["callback_url"]})
    return None


def _count_arg(name: str, default: int) -> int:
    value = request.args.get(name)
    if value is None or value == "":
        return default
    if not value.isdigit() or not 0 < int(value[:9]) <= default:
        raise BadRequest(f"{name} {value[:40]!r} must be a whole number from 1 to {default}", f"invalid_{name}")
    return int(value)


def _query() -> dict:
    return {spec.name: request.args[spec.name] for spec in SPECS if spec.name in request.args}


def _public_url(endpoint: str, **values) -> str:
    """An absolute link: under PUBLIC_URL when set, so no request's Host header can redirect clients elsewhere."""
    public = backends().settings.public_url
    if public:
        return public.rstrip("/") + url_for(endpoint, **values)
    return url_for(endpoint, _external=True, **values)

