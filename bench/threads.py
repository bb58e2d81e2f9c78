"""Right threads: bare Demucs on one clip with 1 Torch thread, one per allowed CPU, and twice that
(oversubscribed: what a container gets when Torch counts the node's cores, not its CPU limit), alternating."""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

from bench import songs
from bench.bare import run_bare
from bench.config import Plan, child_env
from bench.report import Check, Section, Table, cgroup_cpu_limit, seconds

TITLE = "Right threads: Torch threads versus the CPUs allowed"


def run(plan: Plan, scratch: Path) -> list[Section]:
    song = songs.song(plan.clip_seconds)
    counts = sorted({1, plan.cores, 2 * plan.cores})
    times: dict[int, list[float]] = {count: [] for count in counts}
    for rep in range(plan.threads_reps):
        for count in counts[rep % len(counts) :] + counts[: rep % len(counts)]:  # each count leads in turn
            times[count].append(run_bare(song, plan.model, count, scratch).seconds)
            print(
                f"threads run {rep + 1}/{plan.threads_reps}, {count} thread(s): {seconds(times[count][-1])}", flush=True
            )
    return [_section(plan, song, times)]


def torch_default_threads() -> int:
    """How many threads Torch takes here when nobody tells it (it follows the CPU affinity, not a cgroup quota)."""
    probe = [sys.executable, "-c", "import torch; print(torch.get_num_threads())"]
    return int(subprocess.run(probe, capture_output=True, text=True, check=True, env=child_env()).stdout)


def _section(plan: Plan, song: Path, times: dict[int, list[float]]) -> Section:
    medians = {count: statistics.median(runs) for count, runs in times.items()}
    matched = medians[plan.cores]
    rows = [
        [
            str(count),
            ", ".join(seconds(run) for run in times[count]),
            seconds(medians[count]),
            f"{medians[count] / matched:.2f}",
        ]
        for count in times
    ]
    checks = [
        Check(f"{count} thread(s) / {plan.cores} (matched), medians", f"{medians[count] / matched:.2f}")
        for count in times
        if count != plan.cores
    ]
    return Section(
        TITLE,
        [
            f"Bare `demucs.separate` on `{song.name}` with OMP_NUM_THREADS set to each count, {plan.threads_reps} "
            f"run(s) each, rotating the order. CPUs allowed to this run: {plan.cores}; cgroup CPU limit: "
            f"{cgroup_cpu_limit() or 'none'}; Torch's own choice here: {torch_default_threads()} thread(s)."
        ],
        [("Wall time by thread count:", Table(["threads", "runs", "median", "vs matched"], rows))],
        checks,
    )
