"""Random-weight checkpoints, seeded, for benchmarks and tests offline.

    .venv/bin/python -m devstack.random_models DIR    # then: demucs.separate -n htdemucs --repo DIR ...
    .venv/bin/python -m devstack.random_models --roformer [--real] DIR    # then: worker.roformer_run --model-dir DIR

Demucs (`write`):
- `htdemucs`: the real htdemucs architecture, segment (7.8 s) and compute; its output is meaningless. The real
  weights cannot be downloaded here, and time or memory does not depend on their values.
- `tiny`: the architecture of Demucs' built-in `demucs_unittest`, with fixed weights. `demucs_unittest` draws
  new random weights in every process, so two runs of it cannot be compared; two runs of `tiny` can.

RoFormer (`write_roformer`), laid out as audio-separator's model folder (checkpoint, YAML config, model list):
- `bs_roformer_unittest`, `mel_band_roformer_unittest`: each architecture in a small configuration (a 512-point
  STFT, 16 channels, one layer, 2 s windows), separating a few seconds in a fraction of a second.
- with `real`, also the catalogue's published checkpoints at their real size, under their real file names and
  with their real configs (worker/roformer_configs/), for the benchmark.
"""

from __future__ import annotations

import argparse
import warnings
from fractions import Fraction
from pathlib import Path

SOURCES = ["drums", "bass", "other", "vocals"]
SIGNATURES = {"htdemucs": "955717e8", "tiny": "0000beef"}  # htdemucs: the pretrained checkpoint's name

# What the small RoFormers share: 2 s windows (hop 441 x (201 - 1)) of a 512-point STFT (257 bins), one vocals
# target as in the published models.
_SMALL_AUDIO = {"chunk_size": 88200, "dim_f": 256, "dim_t": 201, "hop_length": 441, "n_fft": 512, "num_channels": 2,
                "sample_rate": 44100, "min_mean_abs": 0.0}
_SMALL_MODEL = {"dim": 16, "depth": 1, "stereo": True, "num_stems": 1, "time_transformer_depth": 1,
                "freq_transformer_depth": 1, "linear_transformer_depth": 0, "dim_head": 8, "heads": 2,
                "attn_dropout": 0.0, "ff_dropout": 0.0, "flash_attn": True, "dim_freqs_in": 257, "stft_n_fft": 512,
                "stft_hop_length": 441, "stft_win_length": 512, "stft_normalized": False, "mask_estimator_depth": 1}
_SMALL_REST = {"training": {"instruments": ["vocals", "other"], "target_instrument": "vocals"},
               "inference": {"batch_size": 1, "dim_t": 201, "num_overlap": 2}}
SMALL_ROFORMERS = {
    "bs_roformer_unittest": {"audio": _SMALL_AUDIO, "model": {**_SMALL_MODEL, "freqs_per_bands": (64, 64, 64, 65)},
                             **_SMALL_REST},
    "mel_band_roformer_unittest": {"audio": _SMALL_AUDIO, "model": {**_SMALL_MODEL, "num_bands": 8,
                                                                      "sample_rate": 44100}, **_SMALL_REST},
}


def write(folder: Path, seed: int = 0) -> Path:
    """Write both Demucs models into `folder` (once) and return it; use it as `--repo` / `DEMUCS_REPO`."""
    import torch
    from demucs.hdemucs import HDemucs
    from demucs.htdemucs import HTDemucs
    from demucs.states import get_state

    builders = {
        "htdemucs": lambda: HTDemucs(sources=SOURCES, segment=Fraction(39, 5)),
        "tiny": lambda: HDemucs(channels=4, sources=SOURCES),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, build in builders.items():
        checkpoint = folder / f"{SIGNATURES[name]}.th"
        if checkpoint.exists():
            continue
        torch.manual_seed(seed)
        model = build()
        args, kwargs = model._init_args_kwargs
        package = {"klass": type(model), "args": args, "kwargs": kwargs, "state": get_state(model, None, True),
                   "training_args": {}}
        partial = checkpoint.with_suffix(".partial")
        torch.save(package, partial)
        partial.rename(checkpoint)  # concurrent callers never load half a file
        (folder / f"{name}.yaml").write_text(f"models: ['{SIGNATURES[name]}']\n")
    return folder


def write_roformer(folder: Path, real: bool = False, seed: int = 0) -> Path:
    """Write the small RoFormers, and with `real` the published ones at their real size, into `folder` (each
    once) and return it; use it as worker/roformer_run.py's `--model-dir`."""
    import torch
    import yaml

    warnings.filterwarnings("ignore", category=FutureWarning, module="rotary_embedding_torch")  # its own use of torch
    from audio_separator.separator.roformer.roformer_loader import RoformerLoader

    from msaas.models import ROFORMER_MODELS
    from worker import roformer_run

    names = [*SMALL_ROFORMERS, *(name for name in ROFORMER_MODELS if real and name not in SMALL_ROFORMERS)]
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        model = ROFORMER_MODELS[name]
        checkpoint = folder / model.weights
        if checkpoint.exists():
            continue
        config = folder / roformer_run.config_name(model)
        if name in SMALL_ROFORMERS:
            roformer_run.write_atomically(config, yaml.dump(SMALL_ROFORMERS[name]).encode())
        else:
            roformer_run.write_atomically(config, (roformer_run.CONFIGS / config.name).read_bytes())
        torch.manual_seed(seed)
        # The model audio-separator builds from this config: given no checkpoint, its loader keeps the initial
        # weights, so the state saved fits exactly what it will load.
        loaded = RoformerLoader().load_model(model_path=str(folder / "none"), device="cpu",
                                             config=yaml.load(config.read_text(), Loader=yaml.FullLoader))
        if not loaded.success:
            raise RuntimeError(f"audio-separator cannot build {name}: {loaded.error_message}")
        partial = checkpoint.with_suffix(".partial")
        torch.save(loaded.model.state_dict(), partial)
        partial.rename(checkpoint)
        roformer_run.prepare(model, folder, download=False)  # the model list
    return folder


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--roformer", action="store_true", help="the RoFormer models instead of Demucs'")
    parser.add_argument("--real", action="store_true", help="with --roformer: also the real-size ones")
    args = parser.parse_args()
    print(write_roformer(args.folder, args.real) if args.roformer else write(args.folder))
