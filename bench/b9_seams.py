"""SEAMS: one song separated by the worker's own code whole and in chunks, with Demucs' random shifts off, every
stem compared: what the chunks' seams cost in quality (tests/test_chunks.py holds the same threshold in `make
test`)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import sphn

from bench import songs
from bench.config import Plan
from bench.report import Check, Section, Table
from msaas.models import stems_of
from msaas.options import Options
from worker.demucs_run import DemucsConfig, DemucsRun
from worker.separation import SeparationConfig, separate

TARGET_DB = 60.0
SONG_SECONDS = 45
CHUNK_SECONDS = 25  # two chunks and one seam


def run(plan: Plan, scratch: Path) -> list[Section]:
    mp3 = songs.song(SONG_SECONDS)
    demucs = DemucsConfig(repo=plan.model.repo)
    tracks = stems_of(plan.model.name)
    outputs = {}
    with tempfile.TemporaryDirectory(dir=scratch, prefix="seams-") as folder:
        for name, chunk in (("whole", 0), ("chunked", CHUNK_SECONDS)):
            options = Options.resolve({"format": "wav", "shifts": 0}, plan.model.name)
            run_ = DemucsRun(plan.model.name, mp3, Path(folder) / name, options)
            config = SeparationConfig(demucs, cpus=plan.cores, chunk_seconds=chunk)
            paths, *_ = separate(run_, tracks, config, Path(folder) / f"{name}.log")
            outputs[name] = {track: sphn.read(str(path))[0] for track, path in paths.items()}
    differences = {track: _difference(outputs["whole"][track], outputs["chunked"][track]) for track in tracks}
    for track, difference in differences.items():
        print(f"SEAMS {track}: {difference:.1f} dB", flush=True)
    worst = min(differences.values())
    return [Section(
        "SEAMS: chunked against whole, every stem",
        [f"A {SONG_SECONDS} s song (the rondo tiled) separated by worker/separation.py twice, whole and in chunks of "
         f"{CHUNK_SECONDS} s (one seam), as the worker lays them out ({plan.cores} CPUs), `shifts=0` so only "
         "the seams differ; signal-to-difference of each 16-bit WAV stem."],
        [("Stems:", Table(["stem", "signal to difference"], [[t, f"{d:.1f} dB"] for t, d in differences.items()]))],
        [Check("worst stem", f"{worst:.1f} dB", f"≥ {TARGET_DB:g} dB", worst >= TARGET_DB)],
    )]


def _difference(reference: np.ndarray, other: np.ndarray) -> float:
    return float(10 * np.log10((reference**2).sum() / ((reference - other) ** 2).sum()))
