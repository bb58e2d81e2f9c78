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
ALL_TRACKS = (*SIX_STEMS, *(f"no_{stem}" for stem in SIX_STEMS))  # no_<stem>: the rest, with --two-stems
FORMATS = {"mp3": "audio/mpeg", "wav": "audio/wav", "flac": "audio/flac"}  # extension -> content type
MP3_BITRATES = (64, 96, 128, 160, 192, 224, 256, 320)
DEFAULT_BITRATE = 320  # Demucs' own default


def songhash_of(mp3: bytes) -> str:
    return hashlib.sha224(mp3).hexdigest()


def check_songhash(value: str) -> str:
    songhash = value.lower()
    if not SONGHASH.fullmatch(songhash):
        raise BadRequest(f"{value!r} is not a songhash (56 hexadecimal characters)", "invalid_songhash")
    return songhash


def parse_track(value: str) -> tuple[str, str | None]:
    """`vocals`, `vocals.wav` or `base.mp3` -> (track, extension or None); anything else is a BadRequest."""
    name, dot, extension = value.lower().rpartition(".")
    if not dot or extension not in FORMATS:
        name, extension = value.lower(), None
    name = TRACK_ALIASES.get(name, name)
    if name not in ALL_TRACKS:
        raise BadRequest(f"unknown track {value!r}; tracks are {', '.join(ALL_TRACKS)}", "invalid_track")
    return name, extension


def check_model(value: object) -> str:
    if not isinstance(value, str) or value not in MODEL_TRACKS:
        raise BadRequest(f"unknown model {value!r}; models are {', '.join(MODEL_TRACKS)}", "invalid_model")
    return value


@dataclass(frozen=True)
class Options:
    """How to separate a song. `Options()` is the reference's behaviour: default model, four MP3 stems."""

    model: str | None = None
    two_stems: str | None = None
    format: str = "mp3"
    mp3_bitrate: int | None = None

    @classmethod
    def from_fields(cls, values: dict[str, Any]) -> Options:
        """Check each option given (JSON values or query-string text); missing ones take their defaults."""
        model = values.get("model")
        two_stems = values.get("two_stems") or None
        audio_format = values.get("format") or "mp3"
        bitrate = values.get("mp3_bitrate")
        if two_stems is not None and (not isinstance(two_stems, str) or two_stems not in SIX_STEMS):
            raise BadRequest(f"two_stems {two_stems!r} must be one of {', '.join(SIX_STEMS)}", "invalid_option")
        if audio_format not in FORMATS:
            raise BadRequest(f"format {audio_format!r} must be one of {', '.join(FORMATS)}", "invalid_option")
        if bitrate is not None:
            try:
                bitrate = int(bitrate)
            except (TypeError, ValueError):
                bitrate = -1
            if isinstance(values.get("mp3_bitrate"), bool) or bitrate not in MP3_BITRATES:
                raise BadRequest(
                    f"mp3_bitrate must be one of {', '.join(map(str, MP3_BITRATES))} (kbit/s)", "invalid_option"
                )
            if audio_format != "mp3":
                raise BadRequest("mp3_bitrate applies to format mp3 only", "invalid_option")
        return cls(None if model in (None, "") else check_model(model), two_stems, audio_format, bitrate)

    @classmethod
    def parse(cls, values: dict[str, Any], default_model: str) -> Options:
        options = cls.from_fields(values).normalized(default_model)
        model = options.model or default_model
        if options.two_stems and options.two_stems not in MODEL_TRACKS[model]:
            raise BadRequest(
                f"two_stems {options.two_stems!r} is not a source of model {model} "
                f"({', '.join(MODEL_TRACKS[model])})",
                "invalid_option",
            )
        return options

    def normalized(self, default_model: str) -> Options:
        """The reference's defaults become `Options()`; any other choice names its model and bitrate."""
        plain = self.two_stems is None and self.format == "mp3" and self.mp3_bitrate in (None, DEFAULT_BITRATE)
        if plain and self.model in (None, default_model):
            return Options()
        bitrate = (self.mp3_bitrate or DEFAULT_BITRATE) if self.format == "mp3" else None
        return replace(self, model=self.model or default_model, mp3_bitrate=bitrate)

    @property
    def is_default(self) -> bool:
        return self == Options()

    @property
    def tag(self) -> str:
        """Names a non-default result, e.g. `htdemucs_6s-all-mp3320` or `htdemucs-vocals-wav`."""
        return f"{self.model}-{self.two_stems or 'all'}-{self.format}{self.mp3_bitrate or ''}"

    def tracks(self, default_model: str) -> tuple[str, ...]:
        if self.two_stems:
            return self.two_stems, f"no_{self.two_stems}"
        return MODEL_TRACKS.get(self.model or default_model, FOUR_STEMS)

    def as_query(self) -> dict[str, str]:
        """The query parameters that select this result on the track and status routes."""
        if self.is_default:
            return {}
        query = {"model": str(self.model), "format": self.format}
        if self.two_stems:
            query["two_stems"] = self.two_stems
        if self.mp3_bitrate:
            query["mp3_bitrate"] = str(self.mp3_bitrate)
        return query


def result_id(songhash: str, options: Options) -> str:
    """What one separation result is known by: the songhash for the defaults, else songhash/tag."""
    return songhash if options.is_default else f"{songhash}/{options.tag}"


def input_key(songhash: str) -> str:
    return f"{songhash}.mp3"


def outputs_prefix(songhash: str, options: Options) -> str:
    """`<songhash>-` for the defaults (the reference's names), `<songhash>/<tag>/` for any other options,
    so results made with different options never overwrite or get mistaken for each other."""
    return f"{songhash}-" if options.is_default else f"{songhash}/{options.tag}/"


def output_key(songhash: str, track: str, options: Options = Options()) -> str:  # noqa: B008 - immutable
    return f"{outputs_prefix(songhash, options)}{track}.{options.format}"


def song_prefixes(songhash: str) -> tuple[str, str]:
    """Key prefixes under which every result of a song lies, whatever its options."""
    return f"{songhash}-", f"{songhash}/"


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
    two_stems: str | None = None
    format: str = "mp3"
    mp3_bitrate: int | None = None
    enqueued_at: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)  # the same in every delivery of this job
    attempts: int = 0  # deliveries that ended without a result so far

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    def next_attempt(self) -> Job:
        return replace(self, attempts=self.attempts + 1)

    @property
    def options(self) -> Options:
        return Options(self.model, self.two_stems, self.format, self.mp3_bitrate)

    @classmethod
    def of(cls, songhash: str, options: Options, callback: Callback | None = None) -> Job:
        return cls(songhash, options.model, callback, options.two_stems, options.format, options.mp3_bitrate)

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
        options = Options.from_fields(body)
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
            model=options.model,
            callback=None if callback is None else Callback.parse(callback),
            two_stems=options.two_stems,
            format=options.format,
            mp3_bitrate=options.mp3_bitrate,
            enqueued_at=enqueued_at,
            # A job pushed by a script has no id: one derived from its text is the same for every copy of it.
            id=str(body.get("id") or hashlib.sha256(raw if isinstance(raw, bytes) else raw.encode()).hexdigest()[:32]),
            attempts=attempts,
        )
