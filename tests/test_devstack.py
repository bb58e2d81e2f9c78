"""`make run`'s supervisor: it starts the whole stack, restarts a service that dies (and says so), stops
everything on Ctrl-C, and finds a finished song again at its next start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.processes import free_port
from msaas.naming import songhash_of
from support import ROOT, SHORT_SAMPLE, processes, wait_for

pytestmark = pytest.mark.demucs


def children_of(pid: int) -> dict[int, str]:
    return {child: command for child, (parent, command) in processes().items() if parent == pid}


class LocalStack:
    """`python -m devstack` in a folder of its own, on free ports, its output in `devstack.out` there."""

    def __init__(self, folder) -> None:
        self.folder = folder
        self.port, self.grpc_port = free_port(), free_port()
        self.env = {
            **os.environ, "PORT": str(self.port), "REDIS_PORT": str(free_port()),
            "S3_ENDPOINT": f"127.0.0.1:{free_port()}", "DEMUCS_MODEL": "demucs_unittest", "WORKER_METRICS_PORT": "0",
            "PYTHONUNBUFFERED": "1", "GRPC_PORT": str(self.grpc_port), "GRPC_METRICS_PORT": "0",
            "DEVSTACK_DIR": str(folder / "state"),  # not the checkout's .devstack, which `make run` may be using
        }

    def start(self) -> subprocess.Popen:
        output = open(self.folder / "devstack.out", "w")  # noqa: SIM115 - the child writes to it until it stops
        with output:
            stack = subprocess.Popen([sys.executable, "-m", "devstack"], cwd=ROOT, env=self.env, stdout=output,
                                     stderr=output)
        try:
            wait_for(self.rest_ready, 90, "the REST service")
            wait_for(self.rpc_ready, 30, "the gRPC service, the last the stack starts")
        except BaseException:
            stack.kill()
            raise
        return stack

    def printed(self) -> str:
        return (self.folder / "devstack.out").read_text()

    def rest_ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/readyz", timeout=5).ok
        except requests.RequestException:  # not listening yet, or still starting
            return False

    def rpc_ready(self) -> bool:
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}"))
        ready = health_pb2.HealthCheckRequest(service="msaas.v1.SeparationService")
        try:
            return health.Check(ready, timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:  # not listening yet
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def stop(stack: subprocess.Popen) -> None:
    stack.send_signal(signal.SIGINT)
    assert stack.wait(60) == 0


def test_local_stack_restarts_a_crashed_service_and_stops_on_ctrl_c(tmp_path):
    local = LocalStack(tmp_path)
    printed = local.printed
    stack = local.start()
    try:
        port = local.port
        assert f"http://localhost:{port}" in printed() and "model demucs_unittest on cpu" in printed()
        assert f"SeaweedFS, objects in {tmp_path / 'state' / 's3' / 'data'}" in printed()
        [worker] = [pid for pid, command in children_of(stack.pid).items() if "-m worker" in command]
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: "worker restarted (restart #1)" in printed(), 30, "the worker's restart")
        assert "worker exited with code -9; restarting in 1 s" in printed()
        # "taking demucs+roformer jobs from toWorker": the worker names the engines it serves (worker/loop.py)
        wait_for(lambda: " jobs from " in printed().rpartition("restarted")[2], 30, "the new worker on the bus")
        children = children_of(stack.pid)
        assert len(children) == 6  # redis, s3, logs, rest, worker, rpc
        assert local.rpc_ready() and f"localhost:{local.grpc_port}" in printed()

        stop(stack)
        time.sleep(0.5)
        assert [pid for pid in children if os.path.exists(f"/proc/{pid}")] == []
    finally:
        if stack.poll() is None:
            stack.kill()


def test_a_finished_song_is_still_there_after_a_restart(tmp_path):
    """Redis' append-only file and SeaweedFS' objects both stay in DEVSTACK_DIR: the song is not separated again."""
    local = LocalStack(tmp_path)
    song = SHORT_SAMPLE.read_bytes()
    songhash = songhash_of(song)
    stack = local.start()
    try:
        answer = requests.post(f"{local.url}/apiv1/separate", data=song, headers={"Content-Type": "audio/mpeg"})
        assert answer.json()["reason"] == "Song enqueued for separation"

        def state() -> str:
            return requests.get(f"{local.url}/apiv1/status/{songhash}", timeout=5).json()["state"]

        wait_for(lambda: state() == "done", 120, "the song separated")
        stop(stack)
        stack = local.start()
        assert state() == "done"
        track = requests.get(f"{local.url}/apiv1/track/{songhash}/vocals.mp3")
        assert track.status_code == 200 and track.headers["Content-Type"] == "audio/mpeg" and len(track.content) > 0
        again = requests.post(f"{local.url}/apiv1/separate", data=song, headers={"Content-Type": "audio/mpeg"})
        assert again.json()["reason"].startswith("Song already separated")
        stop(stack)
    finally:
        if stack.poll() is None:
            stack.kill()
