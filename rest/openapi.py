"""The OpenAPI 3 description of the API, served at /apiv1/openapi.json; schemathesis keeps it true."""

from __future__ import annotations

from msaas import shapes
from msaas.engines import ENGINE_SETS
from msaas.naming import ALL_TRACKS, FORMATS
from msaas.options import SPECS
from rest import mixes

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
        "type": "object", "required": ["hash", "reason", "options"],
        "properties": {"hash": {"type": "string"}, "reason": {"type": "string"},
                       "options": {**shapes.OPTIONS_SCHEMA,
                                   "description": "the options the result is named by, every one concrete: a "
                                                  "preview's range as the service chose it; ask for its status and "
                                                  "tracks with these"}},
    },
)
STATUS = shapes.schema()
CURSOR = {"name": "cursor", "in": "query", "schema": {"type": "string"},
          "description": "where the page starts: the `next` of the page before"}
USAGE = {"type": "object", "properties": {"songs": {"type": "number"}, "audio_seconds": {"type": "number"},
                                          "cpu_seconds": {"type": "number"}}}
DEAD_LETTER = {"type": "object", "required": ["id", "reason", "attempts", "last_worker", "tenant", "buried_at", "job"],
               "properties": {"id": {"type": "string"}, "songhash": {"type": "string", "nullable": True},
                              "reason": {"type": "string"}, "attempts": {"type": "integer"},
                              "last_worker": {"type": "string"}, "tenant": {"type": "string"},
                              "buried_at": {"type": "string", "format": "date-time"},
                              "job": {"type": "string", "description": "the job as it was queued (JSON)"}}}
MODEL = {"type": "object", "required": ["name", "engine", "stems", "default", "published"], "properties": {
    "name": {"type": "string"}, "engine": {"type": "string", "enum": list(ENGINE_SETS)},
    "stems": {"type": "array", "items": {"type": "string"}}, "default": {"type": "boolean"},
    "cpu_seconds_per_second": {"type": "number", "nullable": True},
    "published": {"type": "array", "items": {"type": "object", "properties": {
        "sdr": {"type": "object", "additionalProperties": {"type": "number"}}, "dataset": {"type": "string"},
        "source": {"type": "string"}}}}}}
LIMIT = {"name": "limit", "in": "query", "schema": {"type": "integer"}}
DEAD_ID = {"name": "entry_id", "in": "path", "required": True, "schema": {"type": "string"}}
ADMIN = {"401": _error("an admin key is required (when keys are configured)"), "429": COMMON["429"],
         "503": COMMON["503"]}


def _admin_paths() -> dict:
    missing = _error("no such dead letter")
    return {
        "/apiv1/admin/dead": {
            "get": {"summary": "dead letters: jobs that will not be retried, oldest first, a page at a time",
                    "parameters": [CURSOR, LIMIT],
                    "responses": {"200": _json("a page", {"type": "object", "properties": {
                        "dead": {"type": "array", "items": DEAD_LETTER},
                        "next": {"type": "string", "nullable": True}}}),
                        "400": _error("a cursor no listing gave"), **ADMIN}},
            "delete": {"summary": "purge every dead letter",
                       "responses": {"200": _json("purged", {"type": "object"}), **ADMIN}},
        },
        "/apiv1/admin/dead/{entry_id}": {
            "get": {"summary": "one dead letter", "parameters": [DEAD_ID],
                    "responses": {"200": _json("the letter", DEAD_LETTER), "404": missing, **ADMIN}},
            "delete": {"summary": "purge one dead letter", "parameters": [DEAD_ID],
                       "responses": {"200": _json("purged", {"type": "object"}), "404": missing, **ADMIN}},
        },
        "/apiv1/admin/dead/{entry_id}/retry": {"post": {
            "summary": "queue a dead job again, its attempts forgotten", "parameters": [DEAD_ID],
            "responses": {"200": _json("queued", {"type": "object"}), "404": missing,
                          "409": _error("its song was queued or separated again since"), **ADMIN}}},
        "/apiv1/admin/usage": {"get": {
            "summary": "every tenant's usage",
            "responses": {"200": _json("usage by tenant", {"type": "object", "properties": {
                "tenants": {"type": "object", "additionalProperties": USAGE}}}), **ADMIN}}},
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
                "summary": "the asking tenant's songs: those waiting for a worker, next first (`queue`), and those "
                           "queued or processing with their places (`songs`), a page at a time",
                "parameters": [CURSOR, {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                                                    "maximum": 100}}],
                "responses": {"200": _json("the queue", {
                    "type": "object", "required": ["queue", "songs", "next"],
                    "properties": {"queue": {"type": "array", "items": {"type": "string"}},
                                   "songs": {"type": "array", "items": {"type": "object", "properties": {
                                       "songhash": {"type": "string"}, "state": {"type": "string"},
                                       "position": {"type": "integer", "nullable": True},
                                       "options": {"type": "object"}}}},
                                   "next": {"type": "string", "nullable": True}},
                }), "400": _error("malformed cursor or limit"), **COMMON},
            }} for path in ("/apiv1/queue", "/apiv1/queue/")},
            "/apiv1/models": {"get": {
                "summary": "the models a job may name: stems, engine, published quality, measured cost",
                "responses": {"200": _json("the catalogue", {"type": "object", "properties": {"models": {
                    "type": "array", "items": MODEL}}}), **COMMON}}},
            "/apiv1/usage": {"get": {
                "summary": "what the asking tenant has used",
                "responses": {"200": _json("usage", {"type": "object", "properties": {
                    "tenant": {"type": "string"}, **USAGE["properties"]}}), **COMMON}}},
            **_admin_paths(),
            **mixes.openapi_paths(SONGHASH, TRACK, OPTION_PARAMETERS, _error, _json, COMMON),
            "/apiv1/status/{songhash}": {"get": {
                "summary": "where a song stands; query options select a result made with other options",
                "parameters": [SONGHASH, *OPTION_PARAMETERS],
                "responses": {"200": _json("the status", STATUS), "400": _error("malformed songhash or option"),
                              "404": _error("song never submitted with these options"), **COMMON},
            }},
            "/apiv1/track/{songhash}/{track}": {"get": {
                "summary": "download a track (streamed); redirect=1 answers 302 to a short-lived link. While the song "
                           "is processing, the part ready so far (the status' ready_seconds; its length is in the "
                           "X-Ready-Seconds header)",
                "parameters": [SONGHASH, TRACK, *OPTION_PARAMETERS,
                               {"name": "redirect", "in": "query", "schema": {"type": "string", "enum": ["0", "1"]}}],
                "responses": {
                    "200": {"description": "the track, or the part of it ready so far", "content": audio,
                            "headers": {"X-Ready-Seconds": {
                                "schema": {"type": "number"},
                                "description": "present while the song is processing: the seconds this part holds"}}},
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
