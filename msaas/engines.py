"""Engines: which runner separates a model (Demucs, RoFormer, or both for a two-model entry), what options apply
to each, the queue lanes a job waits in, and which workers serve which engines (their pools).

A job waits in its engine's lanes (`lane`): Demucs' keep the names `preview` and `normal`, another engine's are
`<engine>:preview` and `<engine>:normal`. A worker serves the engines of WORKER_ENGINES (all by default) and takes
from the lanes of every engine set it has (`served_lanes`): a RoFormer-only GPU pool never takes a Demucs job, and a
RoFormer job waits for a worker that can run it. Each worker says in its heartbeat what it serves, on what, and the
longest song of each model it finishes within its time limit (`Capability`); the door reads that (`Pools`) and
refuses a song no live worker serving its model would finish, with a sentence that says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass

from msaas.errors import BadRequest, ConfigError
from msaas.models import ENGINES, MODELS, engines_of, relative_cost

LANE_KINDS = ("preview", "normal")  # a preview is taken before any song of the normal lanes
ENGINE_SETS = tuple(dict.fromkeys(model.engine for model in MODELS.values()))  # "demucs", "roformer", ...
DEMUCS_ONLY = ("shifts",)  # options a RoFormer does not have
RANGE_OPTIONS = ("start", "end", "preview")  # issue 23's ranges: one model's grid, not a two-model entry's two


def lane(engine: str, kind: str) -> str:
    """The lane of the queue a job for `engine` (a model's engine: "roformer+demucs" for a pair) waits in."""
    return kind if engine == "demucs" else f"{engine}:{kind}"


ALL_LANES = tuple(lane(engine, kind) for kind in LANE_KINDS for engine in ENGINE_SETS)


def lua_tables() -> str:
    """Lua tables for the queue's admission (msaas/jobqueue.py): each model's engine (absent: Demucs) and its cost
    against htdemucs (absent: 1)."""
    engines = ", ".join(f"['{name}']='{model.engine}'" for name, model in MODELS.items() if model.engine != "demucs")
    costs = ", ".join(f"['{name}']={relative_cost(name):.4f}" for name in MODELS if relative_cost(name) != 1.0)
    return f"local ENGINE = {{{engines}}}\nlocal COST = {{{costs}}}\n"


def lanes_of(lane_name: str) -> tuple[str, ...]:
    """The lanes of the engine whose lane `lane_name` is, previews first (a job's position counts only these)."""
    engine = lane_name.rpartition(":")[0] or "demucs"
    return tuple(lane(engine, kind) for kind in LANE_KINDS)


def preview_lanes(lanes: Iterable[str]) -> tuple[str, ...]:
    """The preview lanes among `lanes` (a busy worker looks in those of its engines for a preview to run first)."""
    return tuple(name for name in lanes if name.rpartition(":")[2] == "preview")


def parse_engines(value: str) -> tuple[str, ...]:
    """WORKER_ENGINES: a comma-separated subset of the engines; empty means all."""
    names = tuple(dict.fromkeys(name.strip() for name in value.split(",") if name.strip())) or ENGINES
    unknown = [name for name in names if name not in ENGINES]
    if unknown:
        raise ConfigError(f"WORKER_ENGINES names {', '.join(unknown)}: each must be one of {', '.join(ENGINES)}")
    return names


def served_lanes(engines: Iterable[str]) -> tuple[str, ...]:
    """The lanes a worker serving `engines` takes from: every preview lane before any normal one."""
    have = set(engines)
    return tuple(lane(engine, kind) for kind in LANE_KINDS for engine in ENGINE_SETS
                 if set(engine.split("+")) <= have)


def check_options(model: str, given: Iterable[str], two_stems: str | None) -> None:
    """Options changed from their defaults (`given`) that do not apply to `model`'s engine, refused with a sentence."""
    engines = engines_of(model)
    for name in DEMUCS_ONLY:
        if name in given and "demucs" not in engines:
            raise BadRequest(f"{name} applies to Demucs models only; {model} is a {engines[0]} model",
                             "invalid_option")
    ranged = [name for name in RANGE_OPTIONS if name in given]
    if ranged and len(engines) > 1:
        vocals, rest = MODELS[model].parts
        raise BadRequest(f"{ranged[0]} does not apply to the two-model {model}: its two models' windows fall on "
                         "different grids, so a range of it would not be the whole song's over that range; ask for "
                         f"the whole song, or for a range with {vocals} or {rest} alone", "invalid_range")
    if two_stems and len(engines) > 1:
        raise BadRequest(f"two_stems does not apply to the two-model {model}: it separates four stems (for vocals "
                         f"alone, ask for {MODELS[model].parts[0]})", "invalid_option")


@dataclass(frozen=True)
class Capability:
    """What a worker serves and on what, as its heartbeat says: the longest song (seconds) of each model it serves
    that it expects to finish within its time limit; None where it cannot tell (no measured speed)."""

    engines: tuple[str, ...]
    device: str
    cpus: int
    longest: Mapping[str, float | None]

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Capability | None:
        try:
            data = json.loads(text)
            return cls(tuple(data["engines"]), str(data["device"]), int(data["cpus"]), dict(data["longest"]))
        except (ValueError, KeyError, TypeError):
            return None

    def serves(self, model: str) -> bool:
        return set(engines_of(model)) <= set(self.engines)


def longest_song(model: str, device: str, cpus: int, limit: Callable[[float], float],
                 max_seconds: float) -> float | None:
    """The longest song (at most `max_seconds`) that `model` separates within `limit(seconds)`, the worker's time
    limit: songs take about `cpu_seconds_per_second` / `cpus` seconds per second on the CPU (bench ENGINES). None where
    that is not measured (a GPU, a model never benchmarked)."""
    measured = MODELS[model].cpu_seconds_per_second if model in MODELS else None
    if device != "cpu" or not measured:
        return None
    per_second = measured / max(1, cpus)
    if per_second * max_seconds <= limit(max_seconds):
        return max_seconds
    low, high = 0.0, max_seconds  # the expected time passes the limit once: find where
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if per_second * middle <= limit(middle) else (low, middle)
    return float(math.floor(low))


def refuse_if_too_long(model: str, seconds: float, capabilities: Iterable[Capability]) -> None:
    """The door: refuse a song that every live worker serving `model` expects to take past its time limit (no
    worker alive, or one that cannot tell, refuses nothing: the song waits)."""
    bounds = [capability.longest.get(model) for capability in capabilities if capability.serves(model)]
    if not bounds or any(bound is None for bound in bounds):
        return
    if seconds > (best := max(bounds)):
        raise BadRequest(
            f"a {seconds:.0f} s song would not finish within the time limit with model {model} on the workers that "
            f"serve it: they finish at most {best:.0f} s of audio with it; send a shorter song or range, or choose a "
            "faster model", "too_long_for_model")
