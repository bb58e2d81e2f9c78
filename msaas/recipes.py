"""Mix recipes (docs/mixes.md): what a client wants to hear of a done song, each track at a gain in decibels or
muted, with named shortcuts, and the mix's format. A recipe is checked once and written one canonical way, so it
has one digest however it was sent: the same mix is one stored object (msaas/mixes.py). Standard library only: the
CLI imports it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

from msaas.errors import BadRequest
from msaas.naming import FORMATS
from msaas.options import Options

MIN_GAIN_DB, MAX_GAIN_DB = -120.0, 24.0
FIELDS = ("gains", "mute", "preset", "format", "mp3_bitrate", "sample_format")
OUTPUT = ("format", "mp3_bitrate", "sample_format")  # rows of the options table, as the tracks' own format is
PRESETS = "instrumental (all but vocals), acappella (vocals alone) or no_<stem> (all but that stem)"
MAX_NAMES = 32  # tracks a recipe may name in gains or mute: a result has seven at most
MAX_NAME = 40  # characters of a track name worth reading back in an error
VERSION = 1  # of the canonical form: a change to how mixes are rendered gets a new one, so no old mix is served


def invalid(message: str) -> BadRequest:
    return BadRequest(message, "invalid_recipe")


@dataclass(frozen=True)
class Recipe:
    """A recipe as sent, its shape checked; the tracks it names are checked against a song's (`bind`)."""

    gains: dict[str, float]
    mute: frozenset[str]
    preset: str
    output: Options  # its format, mp3_bitrate and sample_format: the mix's

    @classmethod
    def parse(cls, values: object, default_model: str) -> Recipe:
        """A JSON object (or gRPC's MixRecipe as one): BadRequest for anything else, whatever its types."""
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise invalid("a recipe is a JSON object: {\"gains\": {\"drums\": -6}, \"mute\": [\"vocals\"], ...}")
        unknown = [str(name)[:MAX_NAME] for name in values if name not in FIELDS]
        if unknown:
            raise invalid(f"unknown recipe field(s) {', '.join(map(repr, unknown))}; fields are {', '.join(FIELDS)}")
        gains = _gains(values.get("gains"))
        mute = _names(values.get("mute"))
        preset = values.get("preset") or ""
        if not isinstance(preset, str):
            raise invalid(f"preset must be a name: {PRESETS}")
        output = Options.resolve({name: values.get(name) for name in OUTPUT}, default_model)
        return cls(gains, frozenset(mute), preset, output)

    def bind(self, tracks: tuple[str, ...]) -> Mix:
        """The mix of a result whose tracks are `tracks`: every one's gain, or None where muted; BadRequest for a
        track or shortcut the result does not have."""
        for name in [*self.gains, *sorted(self.mute)]:
            if name not in tracks:
                raise invalid(f"this song has no track {name!r}; its tracks are {', '.join(tracks)}")
        muted = self.mute | _preset(self.preset, tracks)
        gains = {track: None if track in muted else self.gains.get(track, 0.0) + 0.0 for track in tracks}  # -0.0: 0
        output = self.output
        return Mix(gains, output.format, output.mp3_bitrate, output.sample_format, self.preset)


@dataclass(frozen=True)
class Mix:
    """A recipe bound to a result: every track's gain in dB (None: muted), and the format."""

    gains: dict[str, float | None]
    format: str
    mp3_bitrate: int | None
    sample_format: str | None
    preset: str = ""  # names the file only: a shortcut and the mutes it stands for are the same mix

    def canonical(self) -> str:
        return json.dumps({"version": VERSION, "gains": self.gains, "format": self.format,
                           "mp3_bitrate": self.mp3_bitrate, "sample_format": self.sample_format},
                          sort_keys=True, separators=(",", ":"))

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:32]

    @property
    def content_type(self) -> str:
        return FORMATS[self.format]

    def sources(self) -> list[tuple[str, float]]:
        """The tracks heard, each with its gain as a factor; all muted: one track at 0, for a silence of the song's
        length."""
        heard = [(track, 10 ** (gain / 20)) for track, gain in self.gains.items() if gain is not None]
        return heard or [(next(iter(self.gains)), 0.0)]

    def filename(self, songhash: str) -> str:
        return f"{songhash}-{self.preset or 'mix'}-{self.digest[:8]}.{self.format}"


def _gains(value: object) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or len(value) > MAX_NAMES:
        raise invalid(f"gains must be an object of at most {MAX_NAMES} tracks, each with its decibels: "
                      "{\"drums\": -6}")
    gains = {}
    for name, gain in value.items():
        name = _name(name)
        number = _number(gain)
        if not MIN_GAIN_DB <= number <= MAX_GAIN_DB:  # NaN is outside every range
            shown = repr(gain) if len(repr(gain)) <= 40 else repr(gain)[:37] + "..."
            raise invalid(f"the gain of {name} ({shown}) must be a number of decibels from {MIN_GAIN_DB:g} to "
                          f"{MAX_GAIN_DB:g}; mute a track to leave it out")
        gains[name] = number
    return gains


def _number(value: object) -> float:
    """A JSON number as a float (NaN for anything else; an integer too long for a float is infinite)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _names(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list | tuple) or len(value) > MAX_NAMES:
        raise invalid(f"mute must be a list of at most {MAX_NAMES} track names: [\"vocals\"]")
    return [_name(name) for name in value]


def _name(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME:
        raise invalid(f"{str(value)[:MAX_NAME]!r} is not a track name (vocals, drums, bass, other, ...)")
    return value


def _preset(name: str, tracks: tuple[str, ...]) -> frozenset[str]:
    """The tracks a shortcut mutes."""
    if not name:
        return frozenset()
    if name in ("instrumental", "acappella"):
        if "vocals" not in tracks:
            raise invalid(f"preset {name} needs a vocals track; this song's tracks are {', '.join(tracks)}")
        return frozenset({"vocals"}) if name == "instrumental" else frozenset(tracks) - {"vocals"}
    stem = name.removeprefix("no_")
    if name.startswith("no_") and stem in tracks:
        return frozenset({stem})
    raise invalid(f"unknown preset {name[:MAX_NAME]!r}: presets are {PRESETS}, of this song's tracks "
                  f"({', '.join(tracks)})")
