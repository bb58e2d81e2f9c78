"""One RoFormer separation in a child process, as `demucs.separate` is one of Demucs: a BS-RoFormer or Mel-Band
RoFormer checkpoint of the catalogue (`msaas.models.ROFORMER_MODELS`), run by audio-separator.

    python -m worker.roformer_run --model NAME --model-dir DIR --out OUT [--device cpu] [--overlap 0.25]
        [--download] INPUT [INPUT ...]

It writes what the worker's `demucs.separate --float32 --clip-mode none` writes: OUT/NAME/<input name>/<track>.wav,
float, unclipped (the worker rescales the tracks), 44.1 kHz stereo, as long as the input, one per stem of the
catalogue; shows a tqdm bar per input (the worker reads its percentage);
and on failure exits 1 with one sentence, its output's last line.

audio-separator runs offline when its model folder holds the checkpoint, its YAML config and its model list
(download_checks.json). This module puts the config (worker/roformer_configs/) and the list there when they are
missing, and downloads the checkpoint only when told to (`--download`: the worker's model cache).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import traceback
import urllib.request
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import imageio_ffmpeg
import numpy as np

from msaas.audio import CHANNELS, SAMPLE_RATE
from msaas.models import ROFORMER_MODELS, Model
from msaas.options import Options
from msaas.settings import Settings
from worker.demucs_run import ffmpeg_dir
from worker.wav import write_header

if TYPE_CHECKING:
    from audio_separator.separator import Separator

CONFIGS = Path(__file__).resolve().parent / "roformer_configs"
ROOT = Path(__file__).resolve().parent.parent  # the folder holding the packages worker and msaas
WEIGHTS_URL = "https://github.com/TRvlvr/model_repo/releases/download/all_public_uvr_models/"
MODEL_LIST = "download_checks.json"
# The lists audio-separator reads from download_checks.json; it fetches UVR's when the folder holds none.
LISTS = ("vr_download_list", "mdx_download_list", "mdx_download_vip_list", "demucs_download_list",
         "mdx23c_download_list", "mdx23c_download_vip_list", "roformer_download_list")


class Failure(Exception):
    """The separation cannot be done; the message is the sentence the job's status shows."""


@dataclass(frozen=True)
class RoformerConfig:
    """The settings a RoFormer run needs, taken once from `Settings`."""

    model_dir: Path  # audio-separator's model folder
    device: str = "cpu"
    download: bool = False  # fetch missing weights into `model_dir`
    local_dir: Path | None = None  # MODEL_DIR: an offline cluster's folder, looked in first

    @classmethod
    def of(cls, settings: Settings) -> RoformerConfig:
        """Weights from MODEL_DIR where it holds them (an offline cluster's folder), else downloaded once into the
        model cache (MODEL_CACHE_DIR/roformer)."""
        cache = settings.model_cache_dir or Path.home() / ".cache"
        return cls(cache / "roformer", settings.demucs_device, download=True, local_dir=settings.model_dir)

    def folder(self, model: Model) -> RoformerConfig:
        """Where `model`'s run looks: MODEL_DIR when it holds the checkpoint, else the model cache."""
        if self.local_dir and (self.local_dir / model.weights).is_file():
            return RoformerConfig(self.local_dir, self.device)
        return self


@dataclass(frozen=True)
class RoformerRun:
    """One run of this module; the fields, `command` and `track_path` of `worker.demucs_run.DemucsRun`."""

    model: str
    input_path: Path
    out_dir: Path
    options: Options
    # What it separates: float WAVs of the song or of its chunks at the level worker/encoding.py sets (the input
    # itself when empty). A RoFormer's output follows its input's level exactly (its band features are normalised).
    inputs: tuple[Path, ...] = ()
    jobs: int = 1  # always 1: audio-separator separates one window at a time...
    threads: int = 1  # ...with this many Torch threads (OMP_NUM_THREADS, set by the worker)
    tool = "the RoFormer separation"

    def passes(self) -> int:
        """Bars it draws per input: one."""
        return 1

    def environment(self, config: RoformerConfig) -> dict[str, str]:
        """This package importable wherever the worker runs from, `ffmpeg` on the PATH, `threads` Torch threads."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env["PATH"] = f"{ffmpeg_dir()}{os.pathsep}{env.get('PATH', '')}"
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        return env

    def command(self, config: RoformerConfig) -> list[str]:
        config = config.folder(ROFORMER_MODELS[self.model])
        command = [sys.executable, "-m", "worker.roformer_run", "--model", self.model, "--model-dir",
                   str(config.model_dir), "--out", str(self.out_dir), "--device", config.device,
                   "--overlap", f"{self.options.overlap:g}"]
        if config.download:
            command.append("--download")
        return [*command, *(str(path) for path in self.inputs or [self.input_path])]

    def track_path(self, track: str, source: Path | None = None) -> Path:
        return self.out_dir / self.model / (source or self.input_path).stem / f"{track}.wav"


def config_name(model: Model) -> str:
    return Path(model.weights).with_suffix(".yaml").name


def prepare(model: Model, folder: Path, download: bool) -> None:
    """Make `folder` hold what audio-separator needs to load `model` offline: the checkpoint, its config, and a
    model list naming it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / config_name(model)
        if not config.exists():
            if not (CONFIGS / config.name).exists():
                raise Failure(f"there is no config {config.name} for model {model.name} in {folder}")
            write_atomically(config, (CONFIGS / config.name).read_bytes())
        list_models(folder / MODEL_LIST, model)
    except OSError as error:
        raise Failure(f"the model folder {folder} cannot be prepared: {error}") from None
    weights = folder / model.weights
    if not weights.exists():
        if not download:
            raise Failure(f"the weights of model {model.name} are not in {folder} (no {model.weights} there), and "
                          "downloads are off: put the checkpoint there (MODEL_DIR), or let the worker download it "
                          "into MODEL_CACHE_DIR")
        fetch(model, weights)


def list_models(path: Path, model: Model) -> None:
    """Name the catalogue's RoFormer models in audio-separator's model list, kept or made afresh. All of them,
    so that workers sharing the folder never drop each other's."""
    try:
        lists = json.loads(path.read_text()) if path.exists() else {name: {} for name in LISTS}
    except ValueError:
        raise Failure(f"{path} is not a model list (not JSON): delete it") from None
    roformers = lists.setdefault("roformer_download_list", {})
    if any(model.weights in files for files in roformers.values()):
        return
    for each in ROFORMER_MODELS.values():
        roformers[f"Roformer Model: {each.name}"] = {each.weights: config_name(each)}
    write_atomically(path, json.dumps(lists, indent=1).encode())


def fetch(model: Model, path: Path) -> None:
    """Download the checkpoint once: to a file of its own, renamed when whole, so that a cut download is never
    taken for a checkpoint."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with urllib.request.urlopen(WEIGHTS_URL + model.weights, timeout=60) as response, open(partial, "wb") as file:
            shutil.copyfileobj(response, file, 1 << 20)
        partial.replace(path)
    except OSError as error:  # urllib's errors included
        partial.unlink(missing_ok=True)
        raise Failure(f"could not download the weights of model {model.name} into {path.parent} (is the network "
                      f"reachable?): {error}") from None


def write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    partial.replace(path)


def load(model: Model, folder: Path, device: str, overlap: float) -> Separator:
    """audio-separator's separator for `model`, loaded from `folder` (ready: see `prepare`) onto `device`."""
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # audio-separator takes a GPU wherever it sees one
    os.environ.pop("AUDIO_SEPARATOR_MODEL_DIR", None)  # it would override `folder`
    os.environ["PATH"] = f"{ffmpeg_dir()}{os.pathsep}{os.environ.get('PATH', '')}"  # it refuses to start without
    warnings.filterwarnings("ignore", category=FutureWarning, module="rotary_embedding_torch")
    # Imported here, not at the top: the worker imports this module for RoformerRun, and audio-separator takes
    # 2 s and 100 MiB more than torch to import.
    import torch
    from audio_separator.separator import Separator

    if (threads := os.environ.get("OMP_NUM_THREADS", "")).isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))
    # Overlapping windows per window: at least the share `overlap` of each shared with the next, as in Demucs.
    windows = math.ceil(round(1 / (1 - overlap), 6))
    separator = Separator(log_level=logging.WARNING, model_file_dir=str(folder), output_dir=str(folder),
                          mdxc_params={"segment_size": 256, "override_model_segment_size": False, "batch_size": 1,
                                       "overlap": windows, "pitch_shift": 0})
    if device.startswith("cuda") and separator.torch_device.type != "cuda":
        raise Failure(f"model {model.name} was to run on {device}, but torch sees no CUDA device")
    try:
        separator.load_model(model.weights)
    except SystemExit:  # audio-separator's loader exits the process on a checkpoint that torch cannot read
        raise Failure(f"the checkpoint {folder / model.weights} is corrupt or incomplete: delete it") from None
    except Exception as error:
        raise Failure(f"the checkpoint {folder / model.weights} is corrupt or incomplete, or not of the architecture "
                      f"{config_name(model)} describes: {first_line(error)[:200]}") from None
    return separator


def decode(path: Path) -> np.ndarray:
    """The input as float32 (channels, frames) at 44.1 kHz, decoded by ffmpeg as the worker decodes songs."""
    done = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-f", "f32le",
         "-ac", str(CHANNELS), "-ar", str(SAMPLE_RATE), "-"],
        capture_output=True,
    )
    said = done.stderr.decode(errors="replace").strip().splitlines()
    if done.returncode != 0:
        raise Failure(f"the input does not decode as audio: {said[-1] if said else f'ffmpeg exited {done.returncode}'}")
    audio = np.frombuffer(done.stdout, dtype="<f4").reshape(-1, CHANNELS)
    if not len(audio):
        raise Failure(f"the input {path.name} holds no audio")
    return np.ascontiguousarray(audio.T)


def separate(separator: Separator, mix: np.ndarray, model: Model, name: str) -> dict[str, np.ndarray]:
    """Each stem of `mix`, under the catalogue's names: the model's target, and the rest as no_<target> (as
    Demucs names two stems)."""
    try:
        sources = separator.model_instance.demix(mix)
    except (MemoryError, RuntimeError) as error:
        if isinstance(error, MemoryError) or "alloc" in str(error) or "out of memory" in str(error):
            raise Failure(f"out of memory separating {name} with model {model.name}: {first_line(error)}") from None
        raise
    target = separator.model_instance.primary_stem_name
    tracks = {(stem if stem == target else f"no_{target}"): wav for stem, wav in sources.items()}
    if sorted(tracks) != sorted(model.stems):
        raise Failure(f"model {model.name} separated {', '.join(tracks)}, not the catalogue's "
                      f"{', '.join(model.stems)}: is its config right?")
    return tracks


def write(folder: Path, tracks: dict[str, np.ndarray]) -> None:
    """Float WAVs, unclipped."""
    folder.mkdir(parents=True, exist_ok=True)
    for track, audio in tracks.items():
        frames = np.ascontiguousarray(audio.T, dtype="<f4")
        with open(folder / f"{track}.wav", "wb") as file:
            write_header(file, len(frames), float_samples=True)
            file.write(frames.tobytes())


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m worker.roformer_run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help=f"one of {', '.join(ROFORMER_MODELS)}")
    parser.add_argument("--model-dir", type=Path, required=True, help="audio-separator's model folder")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT/MODEL/<input name>/<track>.wav")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--overlap", type=float, default=0.25, help="share of each window shared with the next")
    parser.add_argument("--download", action="store_true", help="download missing weights into --model-dir")
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT")
    args = parser.parse_args(argv)
    if not 0 <= args.overlap < 1:
        parser.error("--overlap must be at least 0 and below 1")
    return args


def run(args: argparse.Namespace) -> None:
    model = ROFORMER_MODELS.get(args.model)
    if model is None:
        raise Failure(f"{args.model} is not a RoFormer model of the catalogue ({', '.join(ROFORMER_MODELS)})")
    prepare(model, args.model_dir, args.download)
    separator = load(model, args.model_dir, args.device, args.overlap)
    for path in args.inputs:
        tracks = separate(separator, decode(path), model, path.name)
        write(args.out / model.name / path.stem, tracks)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except Failure as failure:
        print(failure, file=sys.stderr, flush=True)
        return 1
    except Exception as error:  # unforeseen: the traceback for whoever debugs it, then the sentence
        traceback.print_exc()
        print(f"the RoFormer separation failed: {type(error).__name__}: {first_line(error)}", file=sys.stderr,
              flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
