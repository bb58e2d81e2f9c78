"""The benchmarks of issues 6, 12, 14, 16, 20, 21 and 23: each runs the service and its comparison in the same run,
alternating, and reports medians, ratios and the targets met or missed.

    .venv/bin/python bench/run.py [--quick] [--only B1,B3] [--out FILE]     (or: make bench BENCH_ARGS=--quick)

Each benchmark starts its own redis-server, S3 server, REST (gunicorn) and worker(s) on free ports. The model is
htdemucs with random weights (devstack/random_models.py): the real architecture and compute, made offline.
The Markdown report (machine, date, command, every table) is rewritten after each benchmark. Both modes separate
songs of 10 s, 1, 2.5 and 4 minutes on both sides (B1) and a 30 minute song in the worker (B3); full mode repeats
more, adds a 10 minute song on both sides and a third B5 layout, and takes about 2 hours on 2 idle cores; --quick
takes about 45 minutes.

The old short-sample comparison (tiny model, 8 s song) is B1 with other arguments:
    .venv/bin/python bench/run.py --only B1 --model demucs_unittest --b1-song data/short-hum.mp3 --reps 5
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, Python puts bench/ first on the path, which would make `config` or `threads` top-level names
# that could shadow a library's; the repository root instead, so everything imports as in the services.
sys.path[0] = str(ROOT)

from bench import (  # noqa: E402
    b1_overhead,
    b2_ingest,
    b3_long_songs,
    b4_repeats,
    b5_throughput,
    b6_abuse,
    b6_stall,
    b7_grpc,
    b8_layouts,
    b9_seams,
    b10_door,
    b10_flood_grpc,
    b11_costs,
    b11_engines,
    b12_fairness,
    b12_mixes,
    b13_sooner,
    flood_rest,
    threads,
)
from bench.config import CACHE, FULL, QUICK, Model, Plan  # noqa: E402
from bench.measure import OtherLoad  # noqa: E402
from bench.report import Section, machine  # noqa: E402
from devstack import random_models  # noqa: E402

QUIET = 0.05  # the share of CPU time other processes may take before the report calls the figures skewed
BENCHMARKS: dict[str, Callable[[Plan, Path], list[Section]]] = {
    "B1": b1_overhead.run,  # songs of 10 s to 4 min; and model loading, from the same runs
    "LAYOUTS": b8_layouts.layouts,  # why the worker lays a song out as it does
    "FOOTPRINT": b8_layouts.footprint,  # the memory it plans with, measured
    "SEAMS": b9_seams.run,  # chunked against whole, every stem
    "B2": b2_ingest.run,
    "B3": b3_long_songs.run,
    "B4": b4_repeats.run,
    "B5": b5_throughput.run,
    "B6": b6_abuse.run,  # hostile and slow clients; needs no model
    "B6_STALL": b6_stall.run,  # a hostile callback receiver and the song behind it
    "FLOOD_REST": flood_rest.run,  # /healthz under floods of idle connections; needs no model
    "THREADS": threads.run,
    "GRPC": b7_grpc.run,  # the gRPC API's upload against REST's raw one
    "FLOOD_GRPC": b10_flood_grpc.run,  # gRPC health under stalled streams; time to 503 with Redis frozen
    "DOOR": b10_door.run,  # what deciding a song costs where it is accepted; needs no model
    "ENGINES": b11_engines.run,  # the RoFormer models against htdemucs, CPU
    "MIXES": b12_mixes.run,  # a 4 minute song's mix against its separation; waveform data per track
    "COSTS": b11_costs.run,  # requests with 100 and 10,000 songs queued, among 0 and 300,000 others; needs no model
    "FAIRNESS": b12_fairness.run,  # tenants' turns: a backlog and a song, weights 3:1; the tiny model, always
    "SOONER": b13_sooner.sooner,  # a 4 minute song's first stems, and what they cost the whole
    "PREVIEW": b13_sooner.preview,  # a preview behind 20 four-minute songs
    "ETA": b13_sooner.eta,  # estimates against the truth, 10 songs on 2 workers
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and lengths (about 45 min)")
    parser.add_argument(
        "--only",
        type=_names,
        default=list(BENCHMARKS),
        help=f"comma-separated, of {','.join(BENCHMARKS)} (default: all)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results-latest.md", help="the Markdown report")
    parser.add_argument(
        "--model",
        default="htdemucs",
        help="Demucs model from the catalogue (msaas/models.py; default: htdemucs with random weights; "
        "`demucs_unittest`, Demucs' tiny built-in one, to try the harness quickly)",
    )
    parser.add_argument(
        "--repo",
        type=Path,
        help="folder holding the model's checkpoint (default for htdemucs: "
        "a random-weight one made under bench/.cache/)",
    )
    parser.add_argument("--reps", type=int, help="B1's runs per side and song length")
    parser.add_argument("--b1-seconds", type=_lengths, help="B1's song lengths in seconds, e.g. 10,60,150,240")
    parser.add_argument("--b1-song", type=Path, help="B1's song instead of a synthesised clip")
    parser.add_argument("--b3-seconds", type=_lengths, help="B3's song lengths in seconds, e.g. 60,600,1800")
    parser.add_argument("--b3-bare-max-seconds", type=float, help="B3 runs bare Demucs on songs up to this long")
    parser.add_argument("--chunk-seconds", type=float, help="the worker's CHUNK_SECONDS (default: its own)")
    parser.add_argument("--chunk-overlap-seconds", type=float, help="the worker's CHUNK_OVERLAP_SECONDS")
    parser.add_argument("--sooner-reps", type=int, help="SOONER's runs per side, alternating")
    return parser.parse_args(argv)


def _names(text: str) -> list[str]:
    names = [name.strip().upper() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    return names


def _lengths(text: str) -> tuple[float, ...]:
    return tuple(float(length) for length in text.split(","))


def plan_from(args: argparse.Namespace) -> Plan:
    return (QUICK if args.quick else FULL).with_options(
        model=_model(args.model, args.repo),
        reps=args.reps,
        b1_song=args.b1_song.resolve() if args.b1_song else None,
        b1_seconds=args.b1_seconds,
        b3_seconds=args.b3_seconds,
        b3_bare_max_seconds=args.b3_bare_max_seconds,
        chunk_seconds=args.chunk_seconds,
        chunk_overlap_seconds=args.chunk_overlap_seconds,
        sooner_reps=args.sooner_reps,
    )


def _model(name: str, repo: Path | None) -> Model:
    """The random-weight checkpoints (made once) unless told otherwise: the real weights cannot be downloaded."""
    if repo is None and name in random_models.SIGNATURES:
        repo = CACHE / "models"
        if not (repo / f"{random_models.SIGNATURES[name]}.th").exists():
            print(f"making random-weight checkpoints in {repo}", flush=True)
            random_models.write(repo)
    return Model(name, repo.resolve() if repo else None)


def command_line() -> str:
    """This run's command as typed from the repository root."""

    def relative(path: str) -> str:
        return os.path.relpath(path, ROOT) if os.path.isabs(path) else path

    return shlex.join([relative(sys.executable), relative(sys.argv[0]), *sys.argv[1:]])


def write_report(
    path: Path, sections: list[Section], plan: Plan, quick: bool, started: datetime.datetime, minutes: float
) -> None:
    header = [
        f"# Benchmarks ({'quick' if quick else 'full'} mode)",
        "\n".join(
            f"- {line}"
            for line in [
                f"Date: {started:%Y-%m-%d %H:%M} UTC; took {minutes:.0f} min",
                f"Command: `{command_line()}` (from the repository root)",
                *machine(path),
                f"Model: {plan.model.describe()}",
            ]
        ),
    ]
    path.write_text("\n\n".join([*header, *(section.markdown() for section in sections)]) + "\n")


def _load_note(other: OtherLoad) -> str:
    note = (
        f"Meanwhile, processes outside this benchmark used {other.share:.0%} of the machine's CPU time "
        f"({other.core_seconds:.0f} core-seconds)"
    )
    return note + (": the machine was not quiet, so these figures are skewed." if other.share > QUIET else ".")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = plan_from(args)
    started = datetime.datetime.now(datetime.UTC)
    clock = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="msaas-bench-"))
    sections: list[Section] = []
    failed = []
    for name in args.only:
        print(f"\n### {name}", flush=True)
        with OtherLoad() as other:
            try:
                finished = BENCHMARKS[name](plan, scratch)
            except Exception as error:  # the other benchmarks still run, and the report says what broke
                traceback.print_exc()
                failed.append(name)
                finished = [Section(f"{name}: did not finish", [f"`{type(error).__name__}: {error}`"])]
        finished[0].notes.append(_load_note(other))
        for section in finished:
            print("\n" + section.text(), flush=True)
        sections += finished
        write_report(args.out, sections, plan, args.quick, started, (time.monotonic() - clock) / 60)
    print(f"\nreport: {args.out}")
    if failed:
        print(f"failed: {', '.join(failed)}; the services' logs are kept in {scratch}")
        return 1
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
