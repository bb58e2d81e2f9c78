"""The OpenAPI 3 description of the API, served at /apiv1/openapi.json; schemathesis keeps it true."""

from __future__ import annotations

from msaas.naming import ALL_TRACKS, FORMATS
from msaas.options import SPECS
from msaas.status import STATES

ERROR = {"$ref": "#/components/schemas/Error"}
SONGHASH = {
    "name": "songhash", "in": "path", "required": True,
    "description": "SHA-224 hex digest of the MP3's bytes",
    "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{56}$"},
}
TRACK = {
    "name": "track", "in": "path", "required": True,
    "description": "a track name, optionally with its extension: vocals, vocals.mp3, no_vocals.wav, base.mp3 (bass)",
    "schema": {"type": "string"},
}
# The options table (msaas/options.py), as query parameters and as JSON properties.
OPTION_PARAMETERS = [{"name": spec.name, "in": "query", "schema": spec.schema()} for spec in SPECS]
OPTION_PROPERTIES = {spec.name: spec.schema() for spec in SPECS}


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def _json(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


# Answers any /apiv1 route can give, besides its own.
COMMON = {
    "401": _error("an API key is required and was missing or wrong (only when API keys are configured)"),
    "429": _error("too many requests from this client this minute; see Retry-After"),
    "503": _error("Redis or the object store is unreachable; see Retry-After"),
}
ACCEPTED = _json(
    "accepted, or answered from an existing result",
    {
        "type": "object", "required": ["hash", "reason"],
        "properties": {"hash": {"type": "string"}, "reason": {"type": "string"}},
    },
)
STATUS = {
    "type": "object",
    "required": ["hash", "state", "options", "attempts", "timestamps"],
    "properties": {
        "hash": {"type": "string"},
        "state": {"type": "string", "enum": list(STATES)},
        "options": {"type": "object", "description": "the options the job was accepted with: what runs",
                    "properties": OPTION_PROPERTIES},
        "attempts": {"type": "integer"},
        "timestamps": {"type": "object", "additionalProperties": {"type": "string", "format": "date-time"}},
        "reason": {"type": "string"},
        "position": {"type": "integer", "nullable": True, "description": "1: next to be taken; null: a worker has it"},
        "progress": {"type": "number", "description": "percent, parsed from Demucs' progress output"},
        "worker": {"type": "string"},
        "tracks": {"type": "object", "additionalProperties": {"type": "string", "format": "uri"}},
        "callback": {
            "type": "object",
            "properties": {
                "state": {"type": "string", "enum": ["pending", "delivered", "failed"],
                          "description": "pending until the worker's delivery threads deliver it or give up"},
                "delivered": {"type": "boolean"}, "attempts": {"type": "integer"}, "outcome": {"type": "string"},
            },
        },
    },
}


def document() -> dict:
    audio = {kind: {"schema": {"type": "string", "format": "binary"}} for kind in FORMATS.values()}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Music Separation as a Service",
            "version": "1",
            "description": "Splits songs into stems with Demucs. Errors are {error, message} JSON everywhere.",
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object", "required": ["error", "message"], "additionalProperties": False,
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                },
            },
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"apiKey": []}],
        "paths": {
            "/": {"get": {"summary": "the web page: upload songs, follow them, mix and download their stems "
                                     "(load balancers health-check it)", "security": [],
                          "responses": {"200": {"description": "the page",
                                                "content": {"text/html": {"schema": {"type": "string"}}}}}}},
            "/healthz": {"get": {"summary": "liveness", "security": [],
                                 "responses": {"200": _json("alive", {"type": "object"})}}},
            "/metrics": {"get": {"summary": "Prometheus metrics: jobs enqueued, uploads, requests, queue depths",
                                 "security": [],
                                 "responses": {"200": {"description": "text exposition (OpenMetrics if asked)",
                                                       "content": {kind: {"schema": {"type": "string"}} for kind in
                                                                   ("text/plain", "application/openmetrics-text")}}}}},
            "/readyz": {"get": {"summary": "readiness: Redis and the object store answer", "security": [],
                                "responses": {"200": _json("ready", {"type": "object"}),
                                              "503": COMMON["503"]}}},
            "/apiv1/openapi.json": {"get": {"summary": "this document",
                                            "responses": {"200": _json("OpenAPI 3", {"type": "object"}),
                                                          **COMMON}}},
            "/apiv1/separate": {"post": {
                "summary": "submit a song; options in the JSON body, or as query parameters for raw uploads",
                "parameters": [
                    *OPTION_PARAMETERS,
                    {"name": "callback_url", "in": "query", "schema": {"type": "string"},
                     "description": "raw and multipart uploads: where to POST when done"},
                ],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {
                        "type": "object", "required": ["mp3"],
                        "properties": {
                            "mp3": {"type": "string", "format": "byte", "description": "the MP3, base64"},
                            **OPTION_PROPERTIES,
                            "callback": {"type": "object", "required": ["url"], "properties": {
                                "url": {"type": "string", "format": "uri"},
                                "data": {"description": "POSTed back as JSON, unchanged"},
                            }},
                        },
                    }},
                    "audio/mpeg": {"schema": {"type": "string", "format": "binary"}},
                    "multipart/form-data": {"schema": {
                        "type": "object", "required": ["mp3"],
                        "properties": {"mp3": {"type": "string", "format": "binary"}},
                    }},
                }},
                "responses": {
                    "200": ACCEPTED,
                    "400": _error("malformed body, not an MP3, too long, unknown option, refused callback"),
                    "408": _error("body sent too slowly (under BODY_MIN_RATE bytes/s on average)"),
                    "413": _error("body larger than the upload limit (too_large), or its fields but mp3 over 64 KiB "
                                  "(field_too_large)"),
                    **COMMON,
                },
            }},
            **{path: {"get": {
                "summary": "songs waiting for a worker, next first",
                "responses": {"200": _json("the queue", {
                    "type": "object", "required": ["queue"],
                    "properties": {"queue": {"type": "array", "items": {"type": "string"}}},
                }), **COMMON},
            }} for path in ("/apiv1/queue", "/apiv1/queue/")},
            "/apiv1/status/{songhash}": {"get": {
                "summary": "where a song stands; query options select a result made with other options",
                "parameters": [SONGHASH, *OPTION_PARAMETERS],
                "responses": {"200": _json("the status", STATUS), "400": _error("malformed songhash or option"),
                              "404": _error("song never submitted with these options"), **COMMON},
            }},
            "/apiv1/track/{songhash}/{track}": {"get": {
                "summary": "download a track (streamed); redirect=1 answers 302 to a short-lived link",
                "parameters": [SONGHASH, TRACK, *OPTION_PARAMETERS,
                               {"name": "redirect", "in": "query", "schema": {"type": "string", "enum": ["0", "1"]}}],
                "responses": {
                    "200": {"description": "the track", "content": audio},
                    "302": {"description": "presigned object-store URL in Location"},
                    "400": _error(f"malformed songhash, track (one of {', '.join(ALL_TRACKS)}) or option"),
                    "404": _error("not (yet) there; the message says whether the song is queued or failed"),
                    **COMMON,
                },
            }},
            "/apiv1/remove/{songhash}/{track}": {
                method: {
                    "summary": "remove one track",
                    "parameters": [SONGHASH, TRACK, *OPTION_PARAMETERS],
                    "responses": {"200": _json("removed", {"type": "object", "required": ["hash", "track", "reason"]}),
                                  "400": _error("malformed songhash, track or option"),
                                  "404": _error("no such track"), **COMMON},
                } for method in ("get", "delete")
            },
            "/apiv1/remove/{songhash}": {"delete": {
                "summary": "cancel a song's queued and processing jobs, and remove every track of it (all options), "
                           "its input and its finished statuses",
                "parameters": [SONGHASH],
                "responses": {"200": _json("removed", {"type": "object",
                                                       "required": ["hash", "removed", "cancelled", "reason"]}),
                              "400": _error("malformed songhash"), "404": _error("nothing stored for the song"),
                              **COMMON},
            }},
            "/apiv1/cancel/{songhash}": {"post": {
                "summary": "cancel a song's queued and processing jobs (all options): queued ones leave the queue, "
                           "running ones are stopped within seconds; their status says cancelled",
                "parameters": [SONGHASH],
                "responses": {"200": _json("cancelled", {"type": "object",
                                                         "required": ["hash", "cancelled", "reason"]}),
                              "400": _error("malformed songhash"), **COMMON},
            }},
        },
    }
