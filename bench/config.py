"""What a benchmark run uses: the model, the sizes of quick and full mode, and the children's environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache"  # songs and the random checkpoint, kept between runs


@dataclass(frozen=True)
class Model:
    """A Demucs model by name; `repo` holds a local checkpoint (the random-weight htdemucs), else it is built in."""

    name: str
    repo: Path | None = None

    def flags(self) -> list[str]:
        return ["-n", self.name, *(["--repo", str(self.repo)] if self.repo else [])]

    def describe(self) -> str:
        if self.name == "htdemucs" and self.repo:
            return (
                "`htdemucs` with random weights (`devstack/random_models.py`): the real model's architecture, "
                "segment and compute, so its time and memory are the real model's; its output is noise"
            )
        if self.name == "tiny":
            return "`tiny`, a small random-weight model (`devstack/random_models.py`): for trying the harness only"
        return f"`{self.name}`" + (f" from {self.repo}" if self.repo else "")


@dataclass(frozen=True)
class Plan:
    """Sizes and repetitions of every benchmark; `QUICK` and `FULL` below are the two modes."""

    reps: int  # B1: alternating pairs of runs per song length
    clip_seconds: float  # B4 and the threads benchmark
    b2_clients: int
    b2_bytes: int  # each client's MP3
    b2_rounds: int  # per upload kind, alternating
    b3_seconds: tuple[float, ...]  # song lengths; the worker's ratio is the longest's peak over the shortest's
    b3_bare_max_seconds: float  # bare Demucs runs on songs up to this long (a 30 min song takes it ~40 min here)
    b4_repeats: int  # re-submissions per upload kind
    b5_songs: int
    b5_seconds: float
    b5_reps: int
    threads_reps: int
    b6_slow_seconds: float  # how long /healthz is probed while slow clients drip
    flood_seconds: float  # FLOOD_REST: how long /healthz is probed under each flood
    b1_seconds: tuple[float, ...] = (10, 60, 150, 240)  # B1's song lengths: a clip, and songs of ordinary length
    layout_seconds: float = 150  # LAYOUTS' song
    footprint_seconds: tuple[float, ...] = (60, 240)  # FOOTPRINT's song lengths
    b3_budget_mib: int = 4096  # B3: the worker's MEMORY_BUDGET_MIB
    model: Model = Model("htdemucs")
    b1_song: Path | None = None  # instead of a synthesised clip of `clip_seconds`
    cores: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))  # CPUs this process may run on
    chunk_seconds: float | None = None  # the worker's CHUNK_SECONDS; None: its default
    chunk_overlap_seconds: float | None = None
    grpc_bytes: int = 60_000_000  # GRPC: the song uploaded through gRPC and through REST's raw upload
    grpc_rounds: int = 5  # per API, alternating
    costs_seconds: float = 30.0  # COSTS: how long status is polled at 20/s, per API and phase
    costs_other_songs: int = 300_000  # COSTS: other songs' records the keyspace is crowded with
    fairness_songs: int = 88  # FAIRNESS: songs measured for the shares of tenants of weights 3 and 1 (8 turns of 11)
    sooner_seconds: float = 240  # SOONER's and PREVIEW's songs
    sooner_reps: int = 1  # SOONER: runs per side, alternating
    preview_queue: int = 20  # PREVIEW: songs queued behind the one being separated
    # ETA: songs of mixed lengths submitted at once, in this order, after songs that teach the workers their speed
    eta_seconds: tuple[float, ...] = (60, 15, 120, 35, 90, 25, 150, 45, 105, 75)
    eta_warm_seconds: tuple[float, ...] = (10, 40, 90)

    def with_options(self, **changes: object) -> Plan:
        return replace(self, **{name: value for name, value in changes.items() if value is not None})

    def worker_env(self, threads: int, **settings: str) -> dict[str, str]:
        """Worker settings the benchmarks choose (the worker reads them as its Settings)."""
        env = {"DEMUCS_THREADS": str(threads), **settings}
        if self.chunk_seconds is not None:
            env["CHUNK_SECONDS"] = f"{self.chunk_seconds:g}"
        if self.chunk_overlap_seconds is not None:
            env["CHUNK_OVERLAP_SECONDS"] = f"{self.chunk_overlap_seconds:g}"
        return env


QUICK = Plan(
    reps=1,
    clip_seconds=10,
    b2_clients=20,
    b2_bytes=10_000_000,
    b2_rounds=2,
    b3_seconds=(240, 1800),  # the 4 min song whole, the 30 min song in chunks (B3's budget)
    b3_bare_max_seconds=0,  # B1 runs bare Demucs on the 4 min song
    b4_repeats=100,
    b5_songs=3,
    b5_seconds=150,
    b5_reps=1,
    threads_reps=1,
    b6_slow_seconds=20,
    flood_seconds=15,
    grpc_rounds=4,
    costs_seconds=15.0,
    fairness_songs=66,
)
FULL = Plan(
    reps=2,
    clip_seconds=60,
    b2_clients=20,
    b2_bytes=10_000_000,
    b2_rounds=3,
    b3_seconds=(240, 600, 1800),
    b3_bare_max_seconds=600,
    b4_repeats=200,
    b5_songs=4,
    b5_seconds=150,
    b5_reps=2,
    threads_reps=2,
    b6_slow_seconds=60,
    flood_seconds=30,
    footprint_seconds=(60, 240, 600),
    sooner_reps=2,
    eta_seconds=(120, 30, 240, 70, 180, 50, 300, 90, 210, 150),
)


def child_env(**extra: str) -> dict[str, str]:
    """A small, fixed environment for every child, so the caller's shell (an OMP_NUM_THREADS, say) changes
    nothing; output unbuffered, so Demucs' lines arrive when they are printed."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
    }
    return {**env, **extra}


def torch_threads_env(threads: int) -> dict[str, str]:
    """Torch sizes its CPU thread pool from OMP_NUM_THREADS when set."""
    return {"OMP_NUM_THREADS": str(threads)}
