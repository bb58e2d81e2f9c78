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
from msaas.models import MODELS, SIX_STEMS, stems_of
from msaas.naming import FORMATS, Result

MP3_BITRATES = (64, 96, 128, 160, 192, 224, 256, 320)
SAMPLE_FORMATS = ("int16", "float32")  # int16 is the default, and named as none (the tags of results stay as they were)
# The options the first tags were made of, in their order: results stored under those tags keep their names.
TAGGED_FIRST = ("model", "two_stems", "format", "mp3_bitrate")
INTEGER = re.compile(r"[+]?[0-9]{1,9}")


@dataclass(frozen=True)
class Spec:
    """One row of the table: what an option's values may be, and what it does."""

    name: str
    kind: type  # str, int or float
    default: Any  # None: the service's choice (the model) or not used
    help: str
    choices: tuple = ()
    bounds: tuple[float, float] | None = None
    error: str = "invalid_option"  # the error code a wrong value gets
    number: int = 0  # its field number in the proto's Options message: never reused (proto/generate.py)

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
        return f"a {self.kind.__name__}"

    def schema(self) -> dict:
        """This option as an OpenAPI schema."""
        schema: dict[str, Any] = {"type": {str: "string", int: "integer", float: "number"}[self.kind]}
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
    of the kind (an integral float is an integer); booleans, lists, objects, NaN and infinities never are."""
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
           error: str = "invalid_option") -> Any:
    spec = Spec(name, kind, default, help, tuple(choices), bounds, error, number)
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

    @classmethod
    def resolve(cls, values: Mapping[str, object], default_model: str) -> Options:
        """The options `values` ask for (JSON values or text; absent, null or "" means the default), checked
        against each other, with the model made concrete. The one place a default model is applied."""
        if isinstance(values.get("model"), str):  # a two-model entry's "+" arrives as a space in a query string
            values = {**values, "model": values["model"].replace(" ", "+")}
        given = {spec.name: spec.parse(values[spec.name]) for spec in SPECS if values.get(spec.name) not in (None, "")}
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
        if options.two_stems and options.two_stems not in stems_of(options.model):
            raise BadRequest(
                f"two_stems {options.two_stems!r} is not a source of model {options.model} "
                f"({', '.join(stems_of(options.model))})",
                "invalid_option",
            )
        return options

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
            if spec.name not in TAGGED_FIRST and value != spec.default:
                tag += f"-{spec.name}{value:g}" if isinstance(value, float) else f"-{spec.name}{value}"
        return tag

    def result(self, songhash: str, default_model: str) -> Result:
        """The result these options make of a song; the reference's defaults keep the reference's names."""
        plain = self == Options.resolve({}, default_model)
        return Result(songhash, "" if plain else self.tag)

    def as_fields(self) -> dict[str, Any]:
        """Every option by name, as the job carries them on the wire and the status shows them."""
        return {spec.name: getattr(self, spec.name) for spec in SPECS}

    def as_query(self) -> dict[str, str]:
        """Every option given, as the query parameters that select this result on the read routes."""
        return {name: f"{value:g}" if isinstance(value, float) else str(value)
                for name, value in self.as_fields().items() if value is not None}


SPECS: tuple[Spec, ...] = tuple(item.metadata["spec"] for item in fields(Options))
