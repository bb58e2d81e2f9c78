"""The RoFormer engine's runner (worker/roformer_run.py), run as the worker will run it: a child process with the
small random-weight checkpoints of devstack/random_models.py, on generated audio and the short sample."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import yaml

from devstack import random_models
from msaas.audio import SAMPLE_RATE
from msaas.models import ROFORMER_MODELS
from msaas.options import Options
from support import ROOT, SHORT_SAMPLE
from worker import wav
from worker.demucs_run import DemucsRun, Progress
from worker.roformer_run import CONFIGS, MODEL_LIST, RoformerConfig, RoformerRun, config_name, list_models

SMALL = list(random_models.SMALL_ROFORMERS)
RATE = SAMPLE_RATE


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return random_models.write_roformer(tmp_path_factory.mktemp("roformer"))


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """3.5 s of chords and noise, peaking above full scale, as a float WAV (as the worker writes chunks)."""
    seconds = np.arange(int(3.5 * RATE)) / RATE
    rng = np.random.default_rng(0)
    left = sum(np.sin(2 * np.pi * hz * seconds) for hz in (220, 277, 330)) + 0.1 * rng.standard_normal(len(seconds))
    right = 0.5 * np.sin(2 * np.pi * 110 * seconds) + 0.1 * rng.standard_normal(len(seconds))
    audio = np.stack([left, right], axis=1).astype("<f4") * 0.6
    path = tmp_path_factory.mktemp("input") / "chunk-000.wav"
    with open(path, "wb") as file:
        wav.write_header(file, len(audio), float_samples=True)
        file.write(audio.tobytes())
    return path, audio


def run_roformer(model: str, model_dir: Path, out: Path, *inputs: Path, extra: tuple[str, ...] = (),
                 log: Path | None = None) -> tuple[int, str]:
    """The runner's exit code and its output (stdout and stderr together, as the worker logs them)."""
    log = log or out.parent / f"{out.name}.log"
    with open(log, "wb") as output:
        done = subprocess.run([sys.executable, "-m", "worker.roformer_run", "--model", model, "--model-dir",
                               str(model_dir), "--out", str(out), *extra, *map(str, inputs)],
                              cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, timeout=300)
    return done.returncode, log.read_text(errors="replace")


def last_line(output: str) -> str:
    return [line for line in output.replace("\r", "\n").splitlines() if line.strip()][-1]


def decoded(path: Path) -> np.ndarray:
    done = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "f32le",
                           "-ac", "2", "-ar", str(RATE), "-"], capture_output=True, check=True)
    return np.frombuffer(done.stdout, dtype="<f4").reshape(-1, 2)


@pytest.fixture(scope="module")
def separated(model_dir, generated, tmp_path_factory) -> dict[str, Path]:
    """Each small model's run over the generated chunk and the short sample: its output folder, beside its log."""
    runs = {}
    for model in SMALL:
        out = tmp_path_factory.mktemp("out") / "separated"
        code, output = run_roformer(model, model_dir, out, generated[0], SHORT_SAMPLE)
        assert code == 0, output
        runs[model] = out
    return runs


@pytest.mark.demucs
@pytest.mark.parametrize("model", SMALL)
def test_each_model_writes_its_stems_as_long_as_each_input_and_adding_up_to_it(separated, generated, model):
    for source, audio in [(generated[0], generated[1]), (SHORT_SAMPLE, decoded(SHORT_SAMPLE))]:
        run = RoformerRun(model, source, separated[model], Options())
        tracks = {track: wav.read(run.track_path(track)) for track in ROFORMER_MODELS[model].stems}
        assert sorted(tracks) == ["no_vocals", "vocals"]
        for track in tracks.values():
            assert track.shape == audio.shape  # wav.read: float32 stereo; and every frame of the input
        assert float(np.abs(tracks["vocals"]).max()) > 1e-3  # the model did separate something...
        assert not np.allclose(tracks["vocals"], audio, atol=1e-3)  # ...and not merely copy the input
        np.testing.assert_allclose(tracks["vocals"] + tracks["no_vocals"], audio, atol=1e-5)
        with open(run.track_path("vocals"), "rb") as file:
            assert int.from_bytes(file.read(28)[24:28], "little") == RATE


@pytest.mark.demucs
@pytest.mark.parametrize("model", SMALL)
def test_the_worker_reads_the_runs_progress_from_its_output(separated, model):
    assert Progress(separated[model].parent / "separated.log", passes=1).read() == 100.0


@pytest.mark.demucs
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_corrupt_checkpoint_fails_with_a_sentence_not_a_traceback(model_dir, tmp_path, damage):
    model = ROFORMER_MODELS["bs_roformer_unittest"]
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / config_name(model)).write_bytes((model_dir / config_name(model)).read_bytes())
    whole = (model_dir / model.weights).read_bytes()
    (folder / model.weights).write_bytes(whole[: len(whole) // 2] if damage == "truncated" else bytes(range(256)) * 8)
    code, output = run_roformer(model.name, folder, tmp_path / "out", SHORT_SAMPLE)
    assert code == 1
    assert "Traceback" not in output
    assert str(folder / model.weights) in last_line(output)
    assert "corrupt or incomplete" in last_line(output)


@pytest.mark.demucs
def test_missing_weights_fail_naming_the_folder_looked_in(tmp_path):
    folder = tmp_path / "models"
    code, output = run_roformer("bs_roformer_viperx_1297", folder, tmp_path / "out", SHORT_SAMPLE)
    assert code == 1
    assert "Traceback" not in output
    assert last_line(output) == (f"the weights of model bs_roformer_viperx_1297 are not in {folder} "
                                 "(no model_bs_roformer_ep_317_sdr_12.9755.ckpt there), and downloads are off: put "
                                 "the checkpoint there (MODEL_DIR), or let the worker download it into "
                                 "MODEL_CACHE_DIR")
    # The folder is ready for the weights: the shipped config and the model list are there.
    assert (folder / "model_bs_roformer_ep_317_sdr_12.9755.yaml").read_bytes() == (
        CONFIGS / "model_bs_roformer_ep_317_sdr_12.9755.yaml").read_bytes()
    assert (folder / MODEL_LIST).exists()


@pytest.mark.demucs
def test_an_input_that_is_not_audio_fails_with_a_sentence(model_dir, tmp_path):
    text = tmp_path / "notes.mp3"
    text.write_text("not audio at all\n" * 100)
    code, output = run_roformer("mel_band_roformer_unittest", model_dir, tmp_path / "out", text)
    assert code == 1
    assert "Traceback" not in output
    assert last_line(output).startswith("the input does not decode as audio: ")


def test_a_roformer_run_lays_its_tracks_out_as_a_demucs_run_does(tmp_path):
    song, chunk = tmp_path / "song.mp3", tmp_path / "chunks" / "chunk-001.wav"
    options = Options(model="htdemucs", overlap=0.5)
    for source in (None, chunk):
        roformer = RoformerRun("bs_roformer_viperx_1297", song, tmp_path / "out", options, (chunk,))
        demucs = DemucsRun("bs_roformer_viperx_1297", song, tmp_path / "out", options, (chunk,))
        assert roformer.track_path("vocals", source) == demucs.track_path("vocals", source)
    config = RoformerConfig(tmp_path / "models", download=True)
    whole = RoformerRun("bs_roformer_viperx_1297", song, tmp_path / "out", options).command(config)
    assert whole[-1] == str(song)
    assert whole[whole.index("--overlap") + 1] == "0.5" and "--download" in whole
    assert whole[whole.index("--model-dir") + 1] == str(tmp_path / "models")
    chunked = RoformerRun("bs_roformer_viperx_1297", song, tmp_path / "out", options, (chunk,)).command(config)
    assert chunked[-1] == str(chunk) and str(song) not in chunked


def test_the_model_list_gains_the_catalogues_models_and_keeps_the_rest(tmp_path):
    path = tmp_path / MODEL_LIST
    kept = {"roformer_download_list": {"Roformer Model: other": {"other.ckpt": "other.yaml"}}, "vr_download_list": {}}
    path.write_text(json.dumps(kept))
    list_models(path, ROFORMER_MODELS["mel_band_roformer_unittest"])
    lists = json.loads(path.read_text())
    assert lists["roformer_download_list"]["Roformer Model: other"] == {"other.ckpt": "other.yaml"}
    listed = {name for files in lists["roformer_download_list"].values() for name in files}
    assert listed == {"other.ckpt", *(model.weights for model in ROFORMER_MODELS.values())}


@pytest.mark.parametrize("model", [name for name in ROFORMER_MODELS if name not in random_models.SMALL_ROFORMERS])
def test_each_published_model_has_its_config_and_its_figures_name_its_stems(model):
    entry = ROFORMER_MODELS[model]
    config = yaml.load((CONFIGS / config_name(entry)).read_text(), Loader=yaml.FullLoader)
    target = config["training"]["target_instrument"]
    assert sorted(entry.stems) == sorted([target, f"no_{target}"])
    assert entry.published and all(set(published.sdr) <= set(entry.stems) for published in entry.published)
