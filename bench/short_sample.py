"""Wall time of one short-sample separation through the whole stack versus bare `demucs.separate`.

    .venv/bin/python bench/short_sample.py [--model demucs_unittest] [--repeat 3] [--song data/short-hum.mp3]

Starts its own redis-server, S3 server, REST (gunicorn) and one worker on free ports, then alternates:
bare CLI run, then POST -> fourth track downloadable. Prints each run and the medians.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack.processes import Child, free_port, redis_command, s3_command  # noqa: E402
from msaas.jobs import FOUR_STEMS, songhash_of  # noqa: E402
from msaas.settings import Settings  # noqa: E402


def start_stack(settings: Settings, folder: Path) -> list[Child]:
    env = {**settings.to_env(), "PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}
    python = sys.executable
    children = [
        Child("redis", redis_command(settings.redis_port, folder), env, folder / "redis.log", settings.redis_port),
        Child("s3", s3_command(int(settings.s3_endpoint.split(":")[1])), env, folder / "s3.log",
              int(settings.s3_endpoint.split(":")[1])),
        Child("rest", [python, "-m", "gunicorn", "-c", "rest/gunicorn.conf.py", "rest:create_app()"], env,
              folder / "rest.log", settings.port, ROOT),
        Child("worker", [python, "-m", "worker"], env, folder / "worker.log", cwd=ROOT),
    ]
    for child in children:
        child.start()
        if child.port:
            child.wait_ready()
    return children


def through_stack(rest: str, mp3: bytes) -> float:
    songhash = songhash_of(mp3)
    for track in FOUR_STEMS:  # a fresh run each time: drop earlier results
        requests.delete(f"http://{rest}/apiv1/remove/{songhash}/{track}")
    started = time.perf_counter()
    answer = requests.post(f"http://{rest}/apiv1/separate", json={"mp3": base64.b64encode(mp3).decode()})
    answer.raise_for_status()
    pending = list(FOUR_STEMS)
    while pending:
        if requests.get(f"http://{rest}/apiv1/track/{songhash}/{pending[0]}").ok:
            pending.pop(0)
        else:
            time.sleep(0.05)
    return time.perf_counter() - started


def bare(model: str, song: Path, out: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "demucs.separate", "--mp3", "-n", model, "-o", str(out), str(song)],
        check=True, capture_output=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="demucs_unittest")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--song", type=Path, default=ROOT / "data" / "short-hum.mp3")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        settings = Settings(
            redis_host="127.0.0.1", redis_port=free_port(), s3_endpoint=f"127.0.0.1:{free_port()}",
            s3_access_key="bench", s3_secret_key="bench-secret", port=free_port(), demucs_model=args.model,
            hostname="bench",
        )
        children = start_stack(settings, folder)
        try:
            mp3 = args.song.read_bytes()
            rest = f"127.0.0.1:{settings.port}"
            stack_times, bare_times = [], []
            for run in range(args.repeat):
                bare_times.append(bare(args.model, args.song, folder / "bare"))
                stack_times.append(through_stack(rest, mp3))
                print(f"run {run + 1}: bare {bare_times[-1]:.2f} s, through the stack {stack_times[-1]:.2f} s")
        finally:
            for child in reversed(children):
                child.stop()
    bare_median, stack_median = statistics.median(bare_times), statistics.median(stack_times)
    print(f"{args.song.name}, model {args.model}, {args.repeat} runs each, alternating")
    print(f"median bare demucs.separate: {bare_median:.2f} s")
    print(f"median POST -> 4th track downloadable: {stack_median:.2f} s (ratio {stack_median / bare_median:.3f})")


if __name__ == "__main__":
    main()
