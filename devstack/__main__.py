"""`make run`: Redis, an S3 server, rest, rpc (gRPC), one worker and logs on this machine, restarted when they crash.

The logs service prints to this terminal, as `kubectl logs` would; every other service writes its own
output to .devstack/logs/<service>.log. Redis' data and the objects stay in .devstack across runs. Ctrl-C
stops everything.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path

from devstack.processes import Child, port_in_use, redis_command, seaweedfs
from msaas.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("DEVSTACK_DIR") or ROOT / ".devstack")  # Redis' data, objects, services' output
# The S3 server lets in only these keys (written into its identities file at each start); the sample scripts'
# callback listeners run on this machine.
LOCAL_DEFAULTS = {
    "S3_ACCESS_KEY": "devstack",
    "S3_SECRET_KEY": "devstack-secret",
    "CALLBACK_ALLOW_HOSTS": "localhost,127.0.0.1",
    "BIND_HOST": "127.0.0.1",  # a laptop's stack is for this machine only; containers keep 0.0.0.0
}
RESTART_DELAY_CAP = 30.0
STABLE_AFTER = 60.0  # a service that ran this long starts its next crash loop from a short delay again

log = logging.getLogger("devstack")


def small_roformers(env: dict[str, str]) -> None:
    """MODEL_DIR, unless set: .devstack/models with the small random-weight RoFormers (`*_unittest`, written once by
    devstack/random_models.py), so songs with them run offline, as demucs_unittest's do."""
    if env.get("MODEL_DIR"):
        return
    from devstack import random_models
    from msaas.models import MODELS

    folder = STATE / "models"
    if not all((folder / MODELS[name].weights).is_file() for name in random_models.SMALL_ROFORMERS):
        log.info("writing the small RoFormers' random weights into %s", folder)
        random_models.write_roformer(folder)
    env["MODEL_DIR"] = str(folder)


def build_children(settings: Settings, env: dict[str, str]) -> list[Child]:
    logs_dir = STATE / "logs"
    redis_dir = STATE / "redis"
    for folder in (logs_dir, redis_dir):
        folder.mkdir(parents=True, exist_ok=True)
    s3_port = int(settings.s3_endpoint.rsplit(":", 1)[1])
    keys = settings.s3_access_key, settings.s3_secret_key
    s3 = seaweedfs("s3", s3_port, STATE / "s3", *keys, env, logs_dir / "s3.log")
    python = sys.executable
    return [
        Child("redis", redis_command(settings.redis_port, redis_dir), env, logs_dir / "redis.log", settings.redis_port),
        s3,
        Child("logs", [python, "-m", "logs"], env, cwd=ROOT),
        Child(
            "rest",
            [python, "-m", "gunicorn", "-c", str(ROOT / "rest" / "gunicorn.conf.py"), "rest:create_app()"],
            env, logs_dir / "rest.log", settings.port, ROOT,
        ),
        Child("worker", [python, "-m", "worker"], env, logs_dir / "worker.log", cwd=ROOT),
        Child("rpc", [python, "-m", "rpc"], env, logs_dir / "rpc.log", settings.grpc_port, ROOT),
    ]


def supervise(children: list[Child]) -> None:
    """Restart any child that exits, with capped exponential delay, until SIGINT or SIGTERM."""
    stopping = []
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    restarts = {child.name: 0 for child in children}
    started = {child.name: time.monotonic() for child in children}
    due: dict[str, float] = {}
    while not stopping:
        now = time.monotonic()
        for child in children:
            code = child.exit_code()
            if code is None or child.name in due:
                if child.name in due and now >= due[child.name]:
                    del due[child.name]
                    child.start()
                    started[child.name] = now
                    log.info("%s restarted (restart #%d)", child.name, restarts[child.name])
                continue
            if now - started[child.name] > STABLE_AFTER:
                restarts[child.name] = 0
            restarts[child.name] += 1
            delay = min(RESTART_DELAY_CAP, 2 ** (restarts[child.name] - 1))
            log.warning(
                "%s exited with code %s; restarting in %d s%s",
                child.name, code, delay, f" (see {child.log_path})" if child.log_path else "",
            )
            due[child.name] = now + delay
        time.sleep(0.2)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s devstack %(levelname)s %(message)s")
    env = {**LOCAL_DEFAULTS, **os.environ, "PYTHONUNBUFFERED": "1"}
    small_roformers(env)
    settings = Settings.from_env(env)
    children = build_children(settings, env)
    busy = [f"{child.name} ({child.port})" for child in children if child.port and port_in_use(child.port)]
    if busy:
        log.error("ports already in use: %s; stop what holds them or choose other ports (docs/development.md)",
                  ", ".join(busy))
        return 1
    print(
        "Music Separation as a Service, local stack\n"
        f"  rest    http://localhost:{settings.port}   (try: python short-sample-requests.py)\n"
        f"  grpc    localhost:{settings.grpc_port}   (msaas.v1.SeparationService, proto/msaas/v1/separation.proto; "
        f"msaas --server grpc://localhost:{settings.grpc_port} ...)\n"
        f"  redis   127.0.0.1:{settings.redis_port}   (append-only file in {STATE / 'redis'})\n"
        f"  s3      http://{settings.s3_endpoint}   (SeaweedFS, objects in {STATE / 's3' / 'data'}; buckets "
        f"{settings.queue_bucket}, {settings.output_bucket})\n"
        f"  worker  model {settings.demucs_model} on {settings.demucs_device}"
        f"{f' from {settings.demucs_repo}' if settings.demucs_repo else ''}; RoFormers' weights from "
        f"{settings.model_dir}, else downloaded\n"
        f"  web     http://localhost:{settings.port}/   (the page; or the `msaas` command: msaas separate song.mp3)\n"
        f"  metrics http://localhost:{settings.port}/metrics   and the worker's "
        f"http://localhost:{settings.worker_metrics_port}/metrics, gRPC's "
        f"http://localhost:{settings.grpc_metrics_port}/metrics\n"
        f"  output  of each service in {STATE / 'logs'}; the log bus follows here. Ctrl-C stops everything.\n",
        flush=True,
    )
    try:
        for child in children:
            child.start()
            if child.port:
                child.wait_ready()
        supervise(children)
    except KeyboardInterrupt:  # Ctrl-C while the services were still starting: stop them all the same
        pass
    except RuntimeError as error:
        log.error("%s", error)
        return 1
    finally:
        log.info("stopping")
        for child in reversed(children):
            child.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
