"""`make run`'s supervisor: it starts the whole stack, restarts a service that dies (and says so), and stops
everything on Ctrl-C."""

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
from support import ROOT, processes, wait_for

pytestmark = pytest.mark.demucs


def children_of(pid: int) -> dict[int, str]:
    return {child: command for child, (parent, command) in processes().items() if parent == pid}


def test_local_stack_restarts_a_crashed_service_and_stops_on_ctrl_c(tmp_path):
    port, grpc_port = free_port(), free_port()
    env = {
        **os.environ, "PORT": str(port), "REDIS_PORT": str(free_port()), "S3_ENDPOINT": f"127.0.0.1:{free_port()}",
        "DEMUCS_MODEL": "demucs_unittest", "WORKER_METRICS_PORT": "0", "PYTHONUNBUFFERED": "1",
        "GRPC_PORT": str(grpc_port), "GRPC_METRICS_PORT": "0",
        "DEVSTACK_DIR": str(tmp_path / "state"),  # not the checkout's .devstack, which `make run` may be using
    }
    output = open(tmp_path / "devstack.out", "w")  # noqa: SIM115 - the child writes to it until it stops
    stack = subprocess.Popen([sys.executable, "-m", "devstack"], cwd=ROOT, env=env, stdout=output, stderr=output)
    try:
        def printed() -> str:
            return (tmp_path / "devstack.out").read_text()

        def rest_up() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).ok
            except requests.RequestException:  # not listening yet, or still starting
                return False

        wait_for(rest_up, 60, "the REST service")
        assert f"http://localhost:{port}" in printed() and "model demucs_unittest on cpu" in printed()
        [worker] = [pid for pid, command in children_of(stack.pid).items() if "-m worker" in command]
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: "worker restarted (restart #1)" in printed(), 30, "the worker's restart")
        assert "worker exited with code -9; restarting in 1 s" in printed()
        wait_for(lambda: "taking jobs" in printed().rpartition("restarted")[2], 30, "the new worker on the bus")
        children = children_of(stack.pid)
        assert len(children) == 6  # redis, s3, logs, rest, rpc, worker
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{grpc_port}"))
        ready = health_pb2.HealthCheckRequest(service="msaas.v1.SeparationService")
        assert health.Check(ready, timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        assert f"localhost:{grpc_port}" in printed()

        stack.send_signal(signal.SIGINT)
        assert stack.wait(60) == 0
        time.sleep(0.5)
        assert [pid for pid in children if os.path.exists(f"/proc/{pid}")] == []
    finally:
        if stack.poll() is None:
            stack.kill()
        output.close()
