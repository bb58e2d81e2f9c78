"""Random-weight Demucs checkpoints, seeded, for benchmarks and tests offline.

    .venv/bin/python -m devstack.random_models DIR    # then: demucs.separate -n htdemucs --repo DIR ...

- `htdemucs`: the real htdemucs architecture, segment (7.8 s) and compute; its output is meaningless. The real
  weights cannot be downloaded here, and time or memory does not depend on their values.
- `tiny`: the architecture of Demucs' built-in `demucs_unittest`, with fixed weights. `demucs_unittest` draws
  new random weights in every process, so two runs of it cannot be compared; two runs of `tiny` can.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

SOURCES = ["drums", "bass", "other", "vocals"]
SIGNATURES = {"htdemucs": "955717e8", "tiny": "0000beef"}  # htdemucs: the pretrained checkpoint's name


def write(folder: Path, seed: int = 0) -> Path:
    """Write both models into `folder` (once) and return it; use it as `--repo` / `DEMUCS_REPO`."""
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


if __name__ == "__main__":
    print(write(Path(sys.argv[1])))
