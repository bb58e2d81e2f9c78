"""`POST /apiv1/mix/<songhash>` and `GET /apiv1/waveform/<songhash>/<track>`: HTTP in and out of
`msaas.mixes.Mixes` (docs/mixes.md), as gRPC's RenderMix and GetWaveform are."""

from __future__ import annotations

import json

from flask import Blueprint, Response, current_app, jsonify, request
from flask.blueprints import BlueprintSetupState

from msaas.errors import BadRequest
from msaas.mixes import Mixes
from msaas.options import SPECS
from msaas.recipes import FIELDS, MAX_GAIN_DB, MIN_GAIN_DB, PRESETS
from rest.backends import tenant
from rest.limits import MAX_FIELD_BYTES, field_too_large

blueprint = Blueprint("mixes", __name__)
YES = ("1", "true", "yes")


@blueprint.record_once
def _build(state: BlueprintSetupState) -> None:
    services = state.app.extensions["msaas"].services
    state.app.extensions["msaas.mixes"] = Mixes(services.songs, services.settings.work_dir,
                                                services.settings.store_timeout)


def mixes() -> Mixes:
    return current_app.extensions["msaas.mixes"]


@blueprint.post("/apiv1/mix/<songhash>")
def mix(songhash: str):
    """The mix a JSON recipe asks for, of the result the query's options name (as the track route's do)."""
    recipe = _recipe()
    plan = mixes().plan(tenant(), songhash, _options(), recipe)
    rendered = mixes().render(plan)
    described = rendered.describe()
    if request.args.get("link", "").lower() in YES:
        return jsonify(url=mixes().link(rendered), **described)
    download = mixes().open(rendered)
    return Response(download, mimetype=plan.mix.content_type, headers={
        "Content-Length": str(download.size),
        "Content-Disposition": f'attachment; filename="{described["filename"]}"',
        "X-Mix-Digest": plan.mix.digest,
        "X-Mix-Cache": rendered.cache,
    })


@blueprint.get("/apiv1/waveform/<songhash>/<track>")
def waveform(songhash: str, track: str):
    data = mixes().waveform(tenant(), songhash, track, _options())
    return Response(data, mimetype="application/json")


def _options() -> dict:
    return {spec.name: request.args[spec.name] for spec in SPECS if spec.name in request.args}


def _recipe() -> object:
    """The JSON body, read up to the fields' budget; no body: every track at 0 dB."""
    if (request.content_length or 0) > MAX_FIELD_BYTES:
        raise field_too_large("a recipe's fields")
    body = request.stream.read(MAX_FIELD_BYTES + 1)
    if len(body) > MAX_FIELD_BYTES:
        raise field_too_large("a recipe's fields")
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as error:
        raise BadRequest(f"the recipe is not valid JSON ({str(error)[:120]}); send an object such as "
                         '{"mute": ["vocals"], "gains": {"drums": -6}}', "invalid_json") from None


def openapi_paths(songhash: dict, track: dict, options: list[dict], error, json_answer, common: dict) -> dict:
    """The two routes for rest/openapi.py's document, with its shared parts."""
    names = {"type": "string", "maxLength": 40}
    recipe = {"type": "object", "additionalProperties": False, "properties": {
        "gains": {"type": "object", "additionalProperties": {"type": "number", "minimum": MIN_GAIN_DB,
                                                              "maximum": MAX_GAIN_DB},
                  "description": "decibels by track; a track not named plays at 0 dB"},
        "mute": {"type": "array", "items": names, "description": "tracks left out (muting wins over a gain)"},
        "preset": {"type": "string", "description": PRESETS},
        **{spec.name: {**spec.schema(), "description": f"the mix's: {spec.help}"} for spec in SPECS
           if spec.name in FIELDS},
    }}
    described = {"type": "object", "required": ["url", "size", "content_type", "digest", "filename", "cache"],
                 "properties": {"url": {"type": "string", "format": "uri"}, "size": {"type": "integer"},
                                "content_type": {"type": "string"}, "digest": {"type": "string"},
                                "filename": {"type": "string"},
                                "cache": {"type": "string", "enum": ["miss", "hit", "shared"]}}}
    audio = {kind: {"schema": {"type": "string", "format": "binary"}} for kind in ("audio/mpeg", "audio/wav",
                                                                                    "audio/flac")}
    waveform = {"type": "object", "required": ["track", "seconds", "buckets", "min", "max"], "properties": {
        "track": {"type": "string"}, "seconds": {"type": "number"}, "buckets": {"type": "integer"},
        "min": {"type": "array", "items": {"type": "integer", "minimum": -127, "maximum": 0}},
        "max": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 127}}}}
    not_done = error("the song is not done (yet): queued, processing, failed or cancelled")
    return {
        "/apiv1/mix/{songhash}": {"post": {
            "summary": "a mix of a done song's tracks, each at its gain or muted, rendered once per recipe from the "
                       "stored tracks (docs/mixes.md); query options name the result, as on the track route",
            "parameters": [songhash, *options,
                           {"name": "link", "in": "query", "schema": {"type": "string", "enum": ["0", "1"]},
                            "description": "1: answer JSON with a 15-minute link to the mix instead of its bytes"}],
            "requestBody": {"required": False, "content": {"application/json": {"schema": recipe}}},
            "responses": {
                "200": {"description": "the mix (or, with link=1, JSON with its link)",
                        "headers": {"X-Mix-Cache": {"schema": {"type": "string", "enum": ["miss", "hit", "shared"]},
                                                    "description": "miss: this request rendered it; hit: stored "
                                                                   "already; shared: rendered by a request at the "
                                                                   "same time"},
                                    "X-Mix-Digest": {"schema": {"type": "string"},
                                                     "description": "names the recipe, however it was written"}},
                        "content": {**audio, "application/json": {"schema": described}}},
                "400": error("malformed songhash, option or recipe (unknown track or field, a gain that is not a "
                             "number of decibels from -120 to 24)"),
                "404": error("song never submitted with these options, or a track it needs removed"),
                "409": not_done,
                "413": error("the recipe is over 64 KiB"),
                **common,
            },
        }},
        "/apiv1/waveform/{songhash}/{track}": {"get": {
            "summary": "a track's waveform, computed once by the worker: the lowest and highest sample in each of up "
                       "to 2,000 spans of the song, from -127 to 127 (full scale)",
            "parameters": [songhash, track, *options],
            "responses": {"200": json_answer("the waveform", waveform),
                          "400": error("malformed songhash, track or option"),
                          "404": error("no such song or track (or one separated before waveforms were kept)"),
                          "409": not_done, **common},
        }},
    }
