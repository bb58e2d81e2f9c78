"""How songs, results and their objects are named: the songhash, tracks, and keys in the store."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from msaas.errors import BadRequest
from msaas.models import SIX_STEMS

SONGHASH = re.compile(r"[0-9a-f]{56}")  # SHA-224 hex digest
TRACK_ALIASES = {"base": "bass"}  # the reference README's typo `base.mp3`
# no_<stem>: the rest, with --two-stems; residual: the song less the stems, with the option residual
ALL_TRACKS = (*SIX_STEMS, *(f"no_{stem}" for stem in SIX_STEMS), "residual")
FORMATS = {"mp3": "audio/mpeg", "wav": "audio/wav", "flac": "audio/flac"}  # extension -> content type


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


def input_key(songhash: str) -> str:
    return f"{songhash}.mp3"


def song_prefixes(songhash: str) -> tuple[str, str]:
    """Key prefixes under which every result of a song lies, whatever its options."""
    return f"{songhash}-", f"{songhash}/"


@dataclass(frozen=True)
class Result:
    """One separation of a song with given options. The reference's defaults have no tag; any other options are
    tagged (`htdemucs_6s-all-mp3320`), so results never overwrite or get mistaken for each other.

    Each attempt writes its tracks under names of its own, `<songhash>/<tag or "default">/<token>/<track>.<ext>`
    (the token fences the attempt: msaas/reliable.py), and the status names the attempt whose tracks are the
    result's (`published`): a partial or stale attempt's files are never served, and an attempt removes only its
    own. While it runs, the parts of its tracks it has ready lie beside them (`ready_key`), named by the status.
    Results stored before attempts had names of their own lie at `key()`: `<songhash>-vocals.mp3` (the reference's
    names), or under `<songhash>/<tag>/`."""

    songhash: str
    tag: str = ""

    @property
    def id(self) -> str:
        """What the result is known by in Redis (status, locks): the songhash, or songhash/tag."""
        return f"{self.songhash}/{self.tag}" if self.tag else self.songhash

    @property
    def prefix(self) -> str:
        return f"{self.songhash}/{self.tag}/" if self.tag else f"{self.songhash}-"

    def key(self, track: str, extension: str) -> str:
        return f"{self.prefix}{track}.{extension}"

    @property
    def objects(self) -> str:
        """The prefix under which every attempt of this result writes."""
        return f"{self.songhash}/{self.tag or 'default'}/"

    def attempt_key(self, token: str, track: str, extension: str) -> str:
        return f"{self.objects}{token}/{track}.{extension}"

    def ready_key(self, token: str, frames: int, track: str, extension: str) -> str:
        """The part of a track an attempt has ready, its first `frames` frames: a name per length, so a file once
        named in the status never changes under a reader."""
        return f"{self.objects}{token}/ready-{frames}/{track}.{extension}"

    @classmethod
    def parse(cls, value: str) -> Result:
        """The inverse of `id`; ValueError for anything else."""
        songhash, _, tag = value.partition("/")
        if not SONGHASH.fullmatch(songhash) or "/" in tag or (tag and not re.fullmatch(r"[\w.-]+", tag)):
            raise ValueError(f"{value!r} is not a result id")
        return cls(songhash, tag)


def waveform_key(result: Result, token: str, track: str) -> str:
    """A track's waveform, beside it: written by the worker (worker/mixdown.py), served by msaas/mixes.py."""
    return f"{result.objects}{token}/{track}.waveform.json"
