"""The Demucs models a job may name, and what each one produces."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

FOUR_STEMS = ("vocals", "drums", "bass", "other")
SIX_STEMS = (*FOUR_STEMS, "guitar", "piano")


@dataclass(frozen=True)
class Model:
    name: str
    stems: tuple[str, ...]
    segment: Fraction | None = None  # seconds per segment when known without loading the model (chunk grid)


# Demucs' pretrained models (demucs/remote/*.yaml) plus the tiny built-in model used offline and in tests.
MODELS = {
    model.name: model
    for model in (
        Model("htdemucs", FOUR_STEMS, Fraction(39, 5)),
        Model("htdemucs_ft", FOUR_STEMS, Fraction(39, 5)),
        Model("htdemucs_6s", SIX_STEMS, Fraction(39, 5)),
        Model("hdemucs_mmi", FOUR_STEMS),
        Model("mdx", FOUR_STEMS),
        Model("mdx_extra", FOUR_STEMS),
        Model("mdx_q", FOUR_STEMS),
        Model("mdx_extra_q", FOUR_STEMS),
        Model("demucs_unittest", FOUR_STEMS, Fraction(40)),
    )
}


def stems_of(model: str) -> tuple[str, ...]:
    """The stems `model` separates; four for a model outside the catalogue (a custom one in DEMUCS_REPO)."""
    return MODELS[model].stems if model in MODELS else FOUR_STEMS
