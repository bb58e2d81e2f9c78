"""How to separate a song: one table of options, resolved to concrete values once, where a job is accepted.

`Options` is the table. Each field carries its `Spec` (type, allowed values, help), and everything else is
derived from it: parsing JSON bodies, query strings and the CLI's flags, the OpenAPI parameters, the web page's
choices, the tag that names a result. Adding an option is adding a field here and using it where it acts
(for Demucs' flags: worker/demucs_run.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from msaas import engines
from msaas.errors import BadRequest
from msaas.models import MODELS, SIX_STEMS, bag_size, hears_neighbours, stems_of
from msaas.naming import FORMATS, Result

MP3_BITRATES = (64, 96, 128, 160, 192, 224, 256, 320)
SAMPLE_FORMATS = ("int16", "float32")  # int16 is the default, and named as none (the tags of results stay as they were)
PREVIEW_SECONDS = 30.0  # the longest a preview may be
LONGEST_SECONDS = 86400.0  # bounds a range's ends (the service's MAX_SONG_SECONDS bounds the song)
# The options the first tags were made of, in their order: results stored under those tags keep their names.
TAGGED_FIRST = ("model", "two_stems", "format", "mp3_bitrate")
INTEGER = re.compile(r"[+]?[0-9]{1,9}")
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")  # a flag as text: query, form field, CLI


@dataclass(frozen=True)
class Spec:
    """One row of the table: what an option's values may be, and what it does."""

    name: str
    kind: type  # str, int, float or bool
    default: Any  # None: the service's choice (the model) or not used
    help: str
    choices: tuple = ()
    bounds: tuple[float, float] | None = None
    error: str = "invalid_option"  # the error code a wrong value gets
    number: int = 0  # its field number in the proto's Options message: never reused (proto/generate.py)
    tagged: bool = True  # part of the result's name; a request's manner (preview) is not

    def parse(self, raw: object) -> Any:
        """A JSON value, or the text of a query string, form field or flag -> the option's value; BadRequest
        for anything else, whatever its type."""
        value = _typed(self.kind, raw)
        outside = self.bounds is not None and value is not None and not self.bounds[0] <= value <= self.bounds[1]
        if value is None or (self.choices and value not in self.choices) or outside:
            shown = repr(raw) if len(repr(raw)) <= 80 else repr(raw)[:77] + "..."
            raise BadRequest(f"{self.name} {shown} must be {self.allowed()}", self.error)
        return value

    def allowed(self) -> str:
        if self.choices:
            listed = ", ".join(map(str, self.choices))
            # the models are too many to name in a sentence: the catalogue lists them
            return "one of " + listed if len(listed) <= 160 else "a model of the catalogue (GET /apiv1/models)"
        if self.bounds:
            return f"a number from {self.bounds[0]:g} to {self.bounds[1]:g}"
        return "true or false" if self.kind is bool else f"a {self.kind.__name__}"

    def schema(self) -> dict:
        """This option as an OpenAPI schema."""
        schema: dict[str, Any] = {"type": {str: "string", int: "integer", float: "number", bool: "boolean"}[self.kind]}
        if self.choices:
            schema["enum"] = list(self.choices)
        if self.bounds:
            schema["minimum"], schema["maximum"] = self.bounds
        if self.default is not None:
            schema["default"] = self.default
        schema["description"] = self.help
        return schema


def _typed(kind: type, raw: object) -> Any:
    """`raw` as a value of `kind`, or None. Text is parsed (query strings, flags); JSON values must already be
    of the kind (an integral float is an integer); booleans (but for a flag), lists, objects, NaN and infinities
    never are."""
    if kind is bool:
        text = raw.strip().lower() if isinstance(raw, str) else None
        return raw if isinstance(raw, bool) else True if text in TRUE else False if text in FALSE else None
    if isinstance(raw, bool) or raw is None:
        return None
    if kind is str:
        return raw if isinstance(raw, str) else None
    if isinstance(raw, str):
        text = raw.strip()
        if kind is int:
            return int(text) if INTEGER.fullmatch(text) else None
        try:
            raw = float(text)
        except ValueError:
            return None
    if isinstance(raw, int):  # JSON integers are exact however long; one too long for a float is no float
        if kind is int:
            return raw
        try:
            return float(raw)
        except OverflowError:
            return None
    if not isinstance(raw, float) or not math.isfinite(raw):
        return None
    if kind is int:
        return int(raw) if raw.is_integer() else None
    return raw


def option(number: int, name: str, kind: type, default: Any, help: str, choices: tuple = (), bounds=None,
           error: str = "invalid_option", tagged: bool = True) -> Any:
    spec = Spec(name, kind, default, help, tuple(choices), bounds, error, number, tagged)
    return field(default=default, metadata={"spec": spec})


@dataclass(frozen=True)
class Options:
    """The table. Instances are resolved: every value concrete, the model included."""

    model: str = option(1, "model", str, None, "the model that separates the song", tuple(MODELS),
                        error="invalid_model")
    two_stems: str | None = option(
        2, "two_stems", str, None, "separate one stem from the rest: tracks <stem> and no_<stem>", SIX_STEMS
    )
    format: str = option(3, "format", str, "mp3", "the tracks' audio format", tuple(FORMATS))
    mp3_bitrate: int | None = option(4, "mp3_bitrate", int, 320, "kbit/s of MP3 tracks (format mp3 only)", MP3_BITRATES)
    overlap: float = option(5, "overlap", float, 0.25, "share of each Demucs segment that overlaps the next (Demucs' "
                            "--overlap): more is smoother and slower", bounds=(0.0, 0.9))
    shifts: int = option(6, "shifts", int, 1, "random time shifts of the song Demucs separates and averages (Demucs' "
                         "--shifts): each one more is a whole separation more; 0 makes runs repeatable", bounds=(0, 10))
    residual: int = option(7, "residual", int, 0, "1: one track more, residual, the song less the sum of the stems, so "
                           "the tracks sum to the song", (0, 1))
    sample_format: str | None = option(8, "sample_format", str, None, "WAV tracks' samples: int16, or float32 (format "
                                       "wav only), kept as separated, never rounded or clipped", SAMPLE_FORMATS)
    start: float = option(9, "start", float, 0.0, "seconds into the song where the range to separate begins",
                          bounds=(0.0, LONGEST_SECONDS), error="invalid_range")
    end: float | None = option(10, "end", float, None, "seconds into the song where the range ends (none: the song's "
                               "end)", bounds=(0.0, LONGEST_SECONDS), error="invalid_range")
    preview: bool = option(11, "preview", bool, False, f"hear it sooner: a range of at most {PREVIEW_SECONDS:g} s (the "
                           "song's loudest, unless start and end both say which), separated before other songs",
                           tagged=False)

    @classmethod
    def resolve(cls, values: Mapping[str, object], default_model: str) -> Options:
        """The options `values` ask for (JSON values or text; absent, null or "" means the default), checked
        against each other, with the model made concrete. The one place a default model is applied."""
        if isinstance(values.get("model"), str):  # a two-model entry's "+" arrives as a space in a query string
            values = {**values, "model": values["model"].replace(" ", "+")}
        # The default model is valid by name even outside the catalogue (a model of DEMUCS_REPO's).
        given = {spec.name: spec.parse(values[spec.name]) for spec in SPECS
                 if values.get(spec.name) not in (None, "", default_model if spec.name == "model" else None)}
        options = replace(cls(model=default_model), **given)
        changed = [spec.name for spec in SPECS if spec.name in given and given[spec.name] != spec.default]
        engines.check_options(options.model, changed, options.two_stems)
        if options.format != "mp3":
            if "mp3_bitrate" in given:
                raise BadRequest("mp3_bitrate applies to format mp3 only", "invalid_option")
            options = replace(options, mp3_bitrate=None)
        if options.sample_format == "float32" and options.format != "wav":
            raise BadRequest("sample_format float32 applies to format wav only", "invalid_option")
        options = replace(options, sample_format=options.sample_format if options.sample_format != "int16" else None)
        if options.end is not None and options.end <= options.start:
            raise BadRequest(f"end {options.end:g} must be after start {options.start:g}", "invalid_range")
        if options.preview and options.end is None and options.start > 0:
            raise BadRequest("a preview takes start and end together, or neither (the service then picks the song's "
                             f"loudest {PREVIEW_SECONDS:g} s)", "invalid_range")
        if options.preview and options.end is not None and options.end - options.start > PREVIEW_SECONDS:
            raise BadRequest(f"a preview is at most {PREVIEW_SECONDS:g} s; this range is "
                             f"{options.end - options.start:g} s (ask without preview for a longer one)",
                             "invalid_range")
        if options.two_stems and options.two_stems not in stems_of(options.model):
            raise BadRequest(
                f"two_stems {options.two_stems!r} is not a source of model {options.model} "
                f"({', '.join(stems_of(options.model))})",
                "invalid_option",
            )
        return options

    def within(self, seconds: float) -> Options:
        """These options, checked against a song of `seconds`: BadRequest, saying why, for a range past its end."""
        if self.start >= seconds or (self.end is not None and self.end > seconds):
            asked = f"{self.start:g} to {'the end' if self.end is None else f'{self.end:g}'}"
            raise BadRequest(f"range {asked} s is past the song's end ({seconds:.3f} s)", "invalid_range")
        return self

    def range_seconds(self, seconds: float) -> float:
        """How much of a song of `seconds` these options separate."""
        return (seconds if self.end is None else self.end) - self.start

    @property
    def is_range(self) -> bool:
        return self.start > 0 or self.end is not None

    @property
    def passes(self) -> int:
        """How many times Demucs goes over the song: once per random shift (at least once), per model of the bag."""
        return max(1, self.shifts) * bag_size(self.model)

    def work(self, seconds: float) -> float:
        """What separating `seconds` of song (of its range) costs, in seconds of audio Demucs goes over: whole
        segments of its grid (a 10 s song is two 7.8 s segments of htdemucs), for a range with the song either side
        that Demucs hears with it (on average: worker/chunks.py `window`), once per pass."""
        segment = float(MODELS[self.model].segment or 0) if self.model in MODELS else 0.0
        if not segment:
            return seconds * self.passes
        stride = (1 - self.overlap) * segment
        reach = stride if hears_neighbours(self.model) else 0.0
        heard = seconds + (segment + (segment - stride) + 2 * reach if self.is_range else 0.0)
        return math.ceil(heard / stride) * segment * self.passes

    def tracks(self) -> tuple[str, ...]:
        residual = ("residual",) if self.residual else ()
        if self.two_stems:
            return self.two_stems, f"no_{self.two_stems}", *residual
        return *stems_of(self.model), *residual

    @property
    def tag(self) -> str:
        """Names a result made with these options, e.g. `htdemucs_6s-all-mp3320` or `htdemucs-vocals-wav`."""
        tag = f"{self.model.replace('+', '_plus_')}-{self.two_stems or 'all'}-{self.format}{self.mp3_bitrate or ''}"
        for spec in SPECS:
            value = getattr(self, spec.name)
            if spec.tagged and spec.name not in TAGGED_FIRST and value != spec.default:
                tag += f"-{spec.name}{text(value)}"
        return tag

    def result(self, songhash: str, default_model: str) -> Result:
        """The result these options make of a song; the reference's defaults keep the reference's names."""
        plain = self.tag == Options.resolve({}, default_model).tag
        return Result(songhash, "" if plain else self.tag)

    def as_fields(self) -> dict[str, Any]:
        """Every option by name, as the job carries them on the wire and the status shows them."""
        return {spec.name: getattr(self, spec.name) for spec in SPECS}

    def as_query(self) -> dict[str, str]:
        """Every option given, as the query parameters that select this result on the read routes."""
        return {name: text(value) for name, value in self.as_fields().items() if value is not None}


def text(value: object) -> str:
    """An option's value as text, for a tag or a query: numbers as short as they go and exact (`0.25`, `30`,
    `1234.567`, where `:g` would round to 6 digits), flags as `true` and `false`."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


SPECS: tuple[Spec, ...] = tuple(item.metadata["spec"] for item in fields(Options))
SPEC = {spec.name: spec for spec in SPECS}
