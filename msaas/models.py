"""The Demucs models a job may name, and what each one produces."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

FOUR_STEMS = ("vocals", "drums", "bass", "other")
SIX_STEMS = (*FOUR_STEMS, "guitar", "piano")


@dataclass(frozen=True)
class Footprint:
    """The peak memory of one `demucs.separate` process on the CPU, as the worker runs it (tcmalloc, float WAVs
    out), for `seconds` of song and `jobs` segments at once: measured by `bench/run.py --only FOOTPRINT`."""

    base_mib: float
    mib_per_minute: float
    mib_per_job: float

    def mib(self, seconds: float, jobs: int) -> float:
        return self.base_mib + self.mib_per_minute * seconds / 60 + self.mib_per_job * jobs

    def longest(self, budget_mib: float, jobs: int) -> float:
        """The longest song, in seconds, that `jobs` segments at once separate within `budget_mib`."""
        return max(0.0, (budget_mib - self.base_mib - self.mib_per_job * jobs) / self.mib_per_minute * 60)


# htdemucs, measured on this project's machine up to 10 minutes of song (bench/RESULTS.md, FOOTPRINT), with about
# 50 MiB to spare over the highest run: each segment in flight holds about 0.8 GiB, and the song about 0.25 GiB a
# minute. The other models are assumed to need as much (not measured: their weights cannot be downloaded here).
HTDEMUCS_FOOTPRINT = Footprint(base_mib=200.0, mib_per_minute=260.0, mib_per_job=800.0)


@dataclass(frozen=True)
class Model:
    name: str
    stems: tuple[str, ...]
    segment: Fraction | None = None  # seconds per segment when known without loading the model (chunk grid)
    footprint: Footprint = HTDEMUCS_FOOTPRINT
    # Whether Demucs may separate several segments at once in threads (-j). Not with an LSTM in the model: torch's
    # LSTM rebuilds shared state on its first calls, and two threads calling it at once fail ("zip() argument 2 is
    # longer than argument 1"). The htdemucs family has none.
    parallel: bool = False
    bag: int = 1  # models averaged (a bag of models, demucs/remote/*.yaml): each goes over the song in turn
    # Whether a segment hears a little of its neighbours (Demucs pads it with them to the model's valid length);
    # HTDemucs hears its segment alone. Decides how much of the song a range is separated with (worker/chunks.py).
    hears_neighbours: bool = True


# Demucs' pretrained models (demucs/remote/*.yaml) plus the tiny built-in model used offline and in tests.
MODELS = {
    model.name: model
    for model in (
        Model("htdemucs", FOUR_STEMS, Fraction(39, 5), parallel=True, hears_neighbours=False),
        Model("htdemucs_ft", FOUR_STEMS, Fraction(39, 5), parallel=True, bag=4, hears_neighbours=False),
        Model("htdemucs_6s", SIX_STEMS, Fraction(39, 5), parallel=True, hears_neighbours=False),
        Model("hdemucs_mmi", FOUR_STEMS),
        Model("mdx", FOUR_STEMS, bag=4),
        Model("mdx_extra", FOUR_STEMS, bag=4),
        Model("mdx_q", FOUR_STEMS, bag=4),
        Model("mdx_extra_q", FOUR_STEMS, bag=4),
        Model("demucs_unittest", FOUR_STEMS, Fraction(40)),
    )
}


def footprint_of(model: str) -> Footprint:
    return MODELS[model].footprint if model in MODELS else HTDEMUCS_FOOTPRINT


def hears_neighbours(model: str) -> bool:
    """Whether a segment of `model` hears beyond itself; so is any model outside the catalogue, to be safe."""
    return model not in MODELS or MODELS[model].hears_neighbours


def parallel(model: str) -> bool:
    """Whether Demucs may separate segments of `model` in threads at once; not a model outside the catalogue."""
    return model in MODELS and MODELS[model].parallel


def bag_size(model: str) -> int:
    """Models in `model`'s bag; one for a model outside the catalogue."""
    return MODELS[model].bag if model in MODELS else 1


def stems_of(model: str) -> tuple[str, ...]:
    """The stems `model` separates; four for a model outside the catalogue (a custom one in DEMUCS_REPO)."""
    return MODELS[model].stems if model in MODELS else FOUR_STEMS
