"""The models a job may name, what each one produces, which engine runs it and what it costs: Demucs'
(`demucs.separate`), the RoFormer family through audio-separator (worker/roformer_run.py), and two-model entries
(a RoFormer's vocals, Demucs' drums, bass and other: worker/engines.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction

FOUR_STEMS = ("vocals", "drums", "bass", "other")
SIX_STEMS = (*FOUR_STEMS, "guitar", "piano")
# A vocals model's two tracks, named as Demucs names them with two_stems=vocals.
VOCALS_STEMS = ("vocals", "no_vocals")
ENGINES = ("demucs", "roformer")


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
# The published RoFormers (audio-separator, one window at a time), from their peaks on a 30 s clip (2.5-3.0 GiB,
# bench ENGINES) with 200 MiB to spare, and per minute the float copies audio-separator holds of the song and its
# stems (about ten, 21 MiB a minute each). The small test ones load in a few hundred MiB.
ROFORMER_FOOTPRINT = Footprint(base_mib=3200.0, mib_per_minute=210.0, mib_per_job=0.0)
SMALL_ROFORMER_FOOTPRINT = Footprint(base_mib=700.0, mib_per_minute=210.0, mib_per_job=0.0)


@dataclass(frozen=True)
class Published:
    """A model's separation quality as published: SDR in dB per stem, on `dataset`, from `source`."""

    sdr: Mapping[str, float]
    dataset: str
    source: str


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
    engine: str = "demucs"  # which runner separates it: `demucs.separate`, or worker/roformer_run.py
    weights: str = ""  # roformer: the checkpoint's file name in audio-separator's model list (its YAML: same stem)
    published: tuple[Published, ...] = field(default=(), compare=False)
    # CPU seconds (all threads) per second of audio, a 30 s song separated whole on the CPU as the worker runs it,
    # random weights of the real size (bench/run.py --only ENGINES, bench/RESULTS.md); None where not measured.
    # CPU time, not wall time: it holds on a shared machine, and wall time follows from the CPUs a worker has.
    cpu_seconds_per_second: float | None = None
    # Whether a segment hears a little of its neighbours (Demucs pads it with them to the model's valid length);
    # HTDemucs hears its segment alone. Decides how much of the song a range is separated with (worker/chunks.py).
    hears_neighbours: bool = True
    # A two-model entry: (the vocals model, the Demucs model for the rest); engine "roformer+demucs".
    parts: tuple[str, ...] = ()

    @property
    def engines(self) -> tuple[str, ...]:
        """The engines a worker needs to run this model."""
        return tuple(self.engine.split("+"))


# Where published SDR figures come from.
MULTISONG = "MVSep Multisong"
ZFTURBO = "ZFTurbo/Music-Source-Separation-Training, docs/pretrained_models.md"
AUDIO_SEPARATOR = "audio-separator 0.47.1, models-scores.json (median of 40 MUSDB18 tracks)"

# Demucs' pretrained models (demucs/remote/*.yaml) plus the tiny built-in model used offline and in tests.
DEMUCS_MODELS = {
    model.name: model
    for model in (
        Model("htdemucs", FOUR_STEMS, Fraction(39, 5), parallel=True, hears_neighbours=False,
              cpu_seconds_per_second=0.7,
              published=(Published({"vocals": 8.24, "drums": 10.88, "bass": 11.76, "other": 5.74}, MULTISONG,
                                   ZFTURBO),)),
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


# Vocals models of the RoFormer family, run through audio-separator: the published checkpoints (their configs in
# worker/roformer_configs/) and a small random-weight one of each architecture for tests
# (devstack/random_models.py). SDR: the Multisong dataset figures from ZFTurbo's table (on which htdemucs scores
# vocals 8.24 dB), and audio-separator's own median over 40 MUSDB18 tracks (models-scores.json in its 0.47.1
# wheel). Their windows: 8 s (2 s the small ones), stepped by 8 s / ceil(1 / (1 - overlap)) (worker/chunks.py).
ROFORMER_MODELS = {
    model.name: model
    for model in (
        Model("bs_roformer_viperx_1297", VOCALS_STEMS, Fraction(8), ROFORMER_FOOTPRINT, engine="roformer",
              weights="model_bs_roformer_ep_317_sdr_12.9755.ckpt", cpu_seconds_per_second=17.8,
              published=(Published({"vocals": 10.87}, MULTISONG, ZFTURBO),
                         Published({"vocals": 11.77, "no_vocals": 16.45}, "MUSDB18", AUDIO_SEPARATOR))),
        Model("mel_band_roformer_viperx_1143", VOCALS_STEMS, Fraction(8), ROFORMER_FOOTPRINT, engine="roformer",
              weights="model_mel_band_roformer_ep_3005_sdr_11.4360.ckpt", cpu_seconds_per_second=16.1,
              published=(Published({"vocals": 9.67}, MULTISONG, ZFTURBO),
                         Published({"vocals": 10.54, "no_vocals": 15.13}, "MUSDB18", AUDIO_SEPARATOR))),
        Model("bs_roformer_unittest", VOCALS_STEMS, Fraction(2), SMALL_ROFORMER_FOOTPRINT, engine="roformer",
              weights="bs_roformer_unittest.ckpt"),
        Model("mel_band_roformer_unittest", VOCALS_STEMS, Fraction(2), SMALL_ROFORMER_FOOTPRINT, engine="roformer",
              weights="mel_band_roformer_unittest.ckpt"),
    )
}


def pair(vocals: str, rest: str) -> Model:
    """A two-model entry `<vocals>+<rest>`: the vocals of a RoFormer, drums, bass and other of Demucs, what the two
    disagree on about the vocals added to other (so the four stems sum to the song as Demucs' do)."""
    first, second = ROFORMER_MODELS[vocals], DEMUCS_MODELS[rest]
    published = tuple(Published({**other.sdr, **{"vocals": mine.sdr["vocals"]}}, mine.dataset, mine.source)
                      for mine in first.published for other in second.published if other.dataset == mine.dataset)
    costs = (first.cpu_seconds_per_second, second.cpu_seconds_per_second)
    return Model(f"{vocals}+{rest}", FOUR_STEMS, engine="roformer+demucs", parts=(vocals, rest),
                 footprint=max(first.footprint, second.footprint, key=lambda footprint: footprint.base_mib),
                 published=published, cpu_seconds_per_second=None if None in costs else round(sum(costs), 2))


# Two-model jobs: "the best vocals, and four stems".
PAIRS = {model.name: model for model in (pair("bs_roformer_viperx_1297", "htdemucs"),
                                         pair("mel_band_roformer_viperx_1143", "htdemucs"),
                                         pair("mel_band_roformer_unittest", "demucs_unittest"))}
MODELS = {**DEMUCS_MODELS, **ROFORMER_MODELS, **PAIRS}
REFERENCE = "htdemucs"  # costs are relative to this model's


def catalogue(default_model: str) -> list[dict]:
    """The models a job may name, as both APIs list them: stems, engine, published quality and measured cost."""
    return [{"name": model.name, "engine": model.engine, "stems": list(model.stems),
             "default": model.name == default_model, "cpu_seconds_per_second": model.cpu_seconds_per_second,
             "published": [{"sdr": dict(published.sdr), "dataset": published.dataset, "source": published.source}
                           for published in model.published]}
            for model in MODELS.values()]


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


def engines_of(model: str) -> tuple[str, ...]:
    """The engines a worker needs for `model`; Demucs for a model outside the catalogue (DEMUCS_REPO's)."""
    return MODELS[model].engines if model in MODELS else ("demucs",)


def relative_cost(model: str) -> float:
    """What separating a second of audio with `model` costs against htdemucs (its measured CPU time over
    htdemucs'); 1 where not measured."""
    measured = MODELS[model].cpu_seconds_per_second if model in MODELS else None
    return measured / MODELS[REFERENCE].cpu_seconds_per_second if measured else 1.0
