"""How a song is laid out on the worker's CPUs and memory (worker/separation.py `layout`), and where the worker
reads its CPUs and memory from (worker/resources.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from msaas.errors import ConfigError
from msaas.models import HTDEMUCS_FOOTPRINT
from msaas.settings import Settings
from worker import demucs_run, resources
from worker.demucs_run import DemucsConfig, environment
from worker.separation import MAX_CHUNK_SECONDS, MIN_CHUNK_SECONDS, WORKER_MIB, SeparationConfig, layout

WORKER = 200.0  # MiB the worker holds, as layout() is told


def config(cpus: int = 2, budget: float = 4096, **changes: object) -> SeparationConfig:
    return SeparationConfig(cpus=cpus, memory_budget_mib=budget, **changes)


def test_a_song_that_fits_the_budget_goes_whole_with_one_segment_per_cpu():
    plan = layout(240, "htdemucs", config(cpus=2), WORKER)
    assert (plan.chunk_seconds, plan.jobs, plan.threads) == (0, 2, 1)
    assert plan.peak_mib == HTDEMUCS_FOOTPRINT.mib(240, 2) <= plan.budget_mib == 4096 - WORKER - WORKER_MIB
    assert layout(240, "htdemucs", config(cpus=4), WORKER).jobs == 4


def test_a_song_that_does_not_fit_is_cut_in_the_longest_chunks_that_do():
    plan = layout(1800, "htdemucs", config(cpus=2), WORKER)
    assert plan.jobs == 2 and MIN_CHUNK_SECONDS < plan.chunk_seconds < 1800
    assert plan.peak_mib <= plan.budget_mib
    assert HTDEMUCS_FOOTPRINT.mib(plan.chunk_seconds + 1, 2) > plan.budget_mib  # the longest that fits
    # The peak does not grow with the song: an hour is cut in chunks as long as half an hour's.
    assert layout(3600, "htdemucs", config(cpus=2), WORKER) == plan
    # However much memory there is, no chunk is longer than the footprint was measured for.
    assert layout(1200, "htdemucs", config(cpus=2, budget=64 * 1024), WORKER).chunk_seconds == MAX_CHUNK_SECONDS


def test_a_budget_too_small_for_one_segment_per_cpu_runs_fewer_at_once_before_chunks_get_short():
    roomy = config(cpus=8, budget=HTDEMUCS_FOOTPRINT.mib(MIN_CHUNK_SECONDS, 8) + WORKER + WORKER_MIB)
    assert layout(600, "htdemucs", roomy, WORKER).jobs == 8
    tight = config(cpus=8, budget=HTDEMUCS_FOOTPRINT.mib(MIN_CHUNK_SECONDS, 3) + WORKER + WORKER_MIB)
    plan = layout(600, "htdemucs", tight, WORKER)
    assert plan.jobs == 3 and plan.threads == 2 and plan.chunk_seconds == pytest.approx(MIN_CHUNK_SECONDS)


def test_chunk_seconds_caps_the_chunks_and_demucs_jobs_the_segments_at_once():
    assert layout(240, "htdemucs", config(chunk_seconds=60), WORKER).chunk_seconds == 60
    assert layout(50, "htdemucs", config(chunk_seconds=60), WORKER).chunk_seconds == 0
    plan = layout(240, "htdemucs", config(cpus=4, jobs=1), WORKER)
    assert (plan.jobs, plan.threads) == (1, 4)
    assert layout(240, "htdemucs", config(cpus=2, jobs=8), WORKER).jobs == 2  # never more than the CPUs


def test_the_budget_defaults_to_a_share_of_the_containers_memory_and_refuses_nonsense(monkeypatch):
    monkeypatch.setattr(resources, "memory_limit", lambda: 5 * 2**30)
    assert SeparationConfig.of(Settings()).memory_budget_mib == pytest.approx(0.8 * 5 * 1024)
    assert SeparationConfig.of(Settings(memory_budget_mib=3000)).memory_budget_mib == 3000
    for name in ("memory_budget_mib", "chunk_seconds", "demucs_threads", "demucs_jobs"):
        with pytest.raises(ConfigError, match=name.upper()):
            SeparationConfig.of(Settings(**{name: -1}))
    with pytest.raises(ConfigError, match="DEMUCS_MALLOC"):
        SeparationConfig.of(Settings(demucs_malloc="jemalloc"))


def test_memory_and_cpus_come_from_the_cgroup_v2_or_v1_else_the_machine(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("5368709120\n")
    assert resources.memory_limit(v2) == 5 * 2**30
    (v2 / "memory.max").write_text("max\n")
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24576000 kB\nMemFree: 1 kB\n")
    assert resources.memory_limit(v2, meminfo) == 24576000 * 1024
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("2147483648\n")
    assert resources.memory_limit(v1, meminfo) == 2 * 2**30
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    assert resources.memory_limit(v1, meminfo) == 24576000 * 1024
    (v1 / "cpu").mkdir()
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert resources.cpus(v1) == 1
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert resources.cpus(v1) == len(os.sched_getaffinity(0))
    assert 10 * 2**20 < resources.own_rss() < resources.memory_limit()


def test_demucs_runs_with_tcmalloc_and_one_thread_per_segment():
    """tcmalloc is part of the measured speed: `make install` and the image install it, and this fails where it
    is missing rather than letting the benchmarks' figures quietly not apply."""
    env = environment(DemucsConfig(), threads=1)
    assert demucs_run.tcmalloc(), "libtcmalloc_minimal is not installed (apt-get install libtcmalloc-minimal4)"
    assert demucs_run.tcmalloc() in env["LD_PRELOAD"].split()
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    system = environment(DemucsConfig(malloc="system"), threads=2)
    assert demucs_run.tcmalloc() not in system.get("LD_PRELOAD", "").split()
    assert system["OMP_NUM_THREADS"] == "2"


def test_resources_files_missing_mean_no_limit(tmp_path: Path):
    assert resources.cpus(tmp_path) == len(os.sched_getaffinity(0))
    assert resources.memory_limit(tmp_path, tmp_path / "none") == resources.UNLIMITED


def test_models_with_an_lstm_and_gpus_separate_one_segment_at_a_time_on_every_thread():
    """torch's LSTM is not safe to call from two threads at once (Demucs -j failed with the tiny model)."""
    for model in ("demucs_unittest", "hdemucs_mmi", "mdx_extra", "a-custom-model"):
        plan = layout(240, model, config(cpus=4), WORKER)
        assert (plan.jobs, plan.threads) == (1, 4), model
    gpu = config(cpus=4, demucs=DemucsConfig(device="cuda"))
    assert layout(240, "htdemucs", gpu, WORKER).jobs == 1
    assert layout(240, "htdemucs_6s", config(cpus=4), WORKER).jobs == 4
