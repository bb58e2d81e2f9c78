"""The job on the wire and the names derived from a song: songhash, object keys, tracks and models."""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from msaas.errors import BadRequest

SONGHASH = re.compile(r"[0-9a-f]{56}")  # SHA-224 hex digest

FOUR_STEMS = ("vocals", "drums", "bass", "other")
SIX_STEMS = (*FOUR_STEMS, "guitar", "piano")
# Demucs' pretrained models (demucs/remote/*.yaml) plus the tiny built-in model used offline and in tests.
MODEL_TRACKS: dict[str, tuple[str, ...]] = {
    "htdemucs": FOUR_STEMS,
    "htdemucs_ft": FOUR_STEMS,
    "htdemucs_6s": SIX_STEMS,
    "hdemucs_mmi": FOUR_STEMS,
    "mdx": FOUR_STEMS,
    "mdx_extra": FOUR_STEMS,
    "mdx_q": FOUR_STEMS,
    "mdx_extra_q": FOUR_STEMS,
    "demucs_unittest": FOUR_STEMS,
}
TRACK_ALIASES = {"base": "bass"}  # the reference README's typo `base.mp3`


def songhash_of(mp3: bytes) -> str:
    return hashlib.sha224(mp3).hexdigest()


def check_songhash(value: str) -> str:
    songhash = value.lower()
    if not SONGHASH.fullmatch(songhash):
        raise BadRequest(f"{value!r} is not a songhash (56 hexadecimal characters)", "invalid_songhash")
    return songhash


def parse_track(value: str) -> str:
    """`vocals`, `vocals.mp3` or `base.mp3` -> the track's name; anything else is a BadRequest."""
    name = value.lower().removesuffix(".mp3")
    name = TRACK_ALIASES.get(name, name)
    if name not in SIX_STEMS:
        raise BadRequest(f"unknown track {value!r}; tracks are {', '.join(SIX_STEMS)}", "invalid_track")
    return name


def check_model(value: object) -> str:
    if not isinstance(value, str) or value not in MODEL_TRACKS:
        raise BadRequest(f"unknown model {value!r}; models are {', '.join(MODEL_TRACKS)}", "invalid_model")
    return value


def input_key(songhash: str) -> str:
    return f"{songhash}.mp3"


def output_key(songhash: str, track: str) -> str:
    return f"{songhash}-{track}.mp3"


@dataclass(frozen=True)
class Callback:
    url: str
    data: Any = field(default_factory=dict)

    @classmethod
    def parse(cls, value: object) -> Callback:
        if not isinstance(value, dict):
            raise BadRequest("callback must be an object with a 'url' and optional 'data'", "invalid_callback")
        url = value.get("url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadRequest(f"callback url {url!r} is not an http(s) URL with a host", "invalid_callback")
        try:
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            raise BadRequest(f"callback url {url!r} has a malformed port", "invalid_callback") from None
        return cls(url=url, data=value.get("data", {}))


@dataclass(frozen=True)
class Job:
    """One song to separate, as pushed onto the worker queue."""

    songhash: str
    model: str | None = None  # None: the worker's configured default
    callback: Callback | None = None
    enqueued_at: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)  # the same in every delivery of this job
    attempts: int = 0  # deliveries that ended without a result so far

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    def next_attempt(self) -> Job:
        return replace(self, attempts=self.attempts + 1)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Job:
        """Decode a job; scripts that push straight onto the queue may name the song `hash`."""
        try:
            body = json.loads(raw)
        except ValueError as error:
            raise BadRequest(f"job is not JSON: {error}", "invalid_job") from None
        if not isinstance(body, dict):
            raise BadRequest("job is not a JSON object", "invalid_job")
        songhash = body.get("songhash", body.get("hash"))
        if not isinstance(songhash, str):
            raise BadRequest("job has no 'songhash'", "invalid_job")
        model = body.get("model")
        callback = body.get("callback")
        attempts = body.get("attempts", 0)
        if not isinstance(attempts, int) or attempts < 0:
            raise BadRequest("job's 'attempts' must be a count", "invalid_job")
        try:
            enqueued_at = float(body.get("enqueued_at") or time.time())
        except (TypeError, ValueError):
            raise BadRequest("job's 'enqueued_at' must be a time in seconds", "invalid_job") from None
        return cls(
            songhash=check_songhash(songhash),
            model=None if model is None else check_model(model),
            callback=None if callback is None else Callback.parse(callback),
            enqueued_at=enqueued_at,
            # A job pushed by a script has no id: one derived from its text is the same for every copy of it.
            id=str(body.get("id") or hashlib.sha256(raw if isinstance(raw, bytes) else raw.encode()).hexdigest()[:32]),
            attempts=attempts,
        )
