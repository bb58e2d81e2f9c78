"""A hung Redis (SIGSTOP) under REST as deployed (gunicorn) and the gRPC service as a process (issue 20, item 4):
every request that needs Redis is answered 503 (with Retry-After) or UNAVAILABLE while Redis is still frozen,
within its REDIS_TIMEOUT; liveness (/healthz, gRPC health "") never waits on it; readiness says not ready; and
both serve again once Redis thaws. Redis here is a server of this test's own: the session's is never frozen."""

from __future__ import annotations

import hashlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import grpc
import pytest
import requests as http
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.processes import Child, free_port
from msaas.v1 import separation_pb2 as pb
from rpc_support import error_code, stub
from support import ROOT, SHORT_SAMPLE, child_env, start_service, wait_for

MP3 = SHORT_SAMPLE.read_bytes()
SONGHASH = hashlib.sha224(MP3).hexdigest()
FROZEN_SECONDS = 60.0  # Redis thaws after this, whatever the test is doing
PATIENCE = 50.0  # seconds a client waits: an answer within it came while Redis was frozen
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def services(settings, own_redis, tmp_path) -> Iterator[tuple[str, str]]:
    """REST under gunicorn and `python -m rpc`, on Redis of their own; yields (REST's, gRPC's) host:port."""
    own = replace(settings, redis_port=own_redis.port)
    rest_port, grpc_port = free_port(), free_port()
    rest = Child("rest", [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "rest" / "gunicorn.conf.py"),
                          "rest:create_app()"], child_env(own, PORT=str(rest_port)), tmp_path / "rest.log",
                 rest_port, ROOT)
    rpc = start_service("rpc", own, tmp_path / "rpc.log", GRPC_PORT=str(grpc_port), GRPC_METRICS_PORT="0",
                        BIND_HOST="127.0.0.1")
    rest.start()
    try:
        rest_address, rpc_address = f"127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}"
        wait_for(lambda: _get(f"http://{rest_address}/readyz") == 200, 30, "REST to be ready")
        wait_for(lambda: _health(rpc_address, "msaas.v1.SeparationService") == SERVING, 30, "rpc to be ready")
        yield rest_address, rpc_address
    finally:
        rest.stop()
        rpc.stop()


def _get(url: str, timeout: float = 5) -> int | None:
    try:
        return http.get(url, timeout=timeout).status_code
    except http.RequestException:
        return None


def _health(address: str, service: str = "", timeout: float = 3) -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                         timeout=timeout).status


def _grpc_status(address: str) -> grpc.RpcError | pb.SongStatus:
    try:
        return stub(address).GetStatus(pb.StatusRequest(songhash=SONGHASH), timeout=PATIENCE)
    except grpc.RpcError as error:
        return error


def test_a_frozen_redis_is_answered_503_and_unavailable_before_it_thaws(services, own_redis):
    rest, rpc = services
    assert http.post(f"http://{rest}/apiv1/separate", data=MP3, headers={"Content-Type": "audio/mpeg"},
                     timeout=30).status_code == 200
    status_url = f"http://{rest}/apiv1/status/{SONGHASH}"
    own_redis.signal(signal.SIGSTOP)
    thaw = threading.Timer(FROZEN_SECONDS, own_redis.signal, (signal.SIGCONT,))
    thaw.start()
    try:
        # Side by side, as a burst of clients would: 10 REST status requests, 20 gRPC GetStatus calls, readiness.
        calls: list[Callable] = [lambda: http.get(status_url, timeout=PATIENCE)] * 10
        calls += [lambda: _grpc_status(rpc)] * 20
        calls += [lambda: http.get(f"http://{rest}/readyz", timeout=PATIENCE)]
        with ThreadPoolExecutor(len(calls)) as pool:
            answers = list(pool.map(lambda call: call(), calls))
            # Meanwhile (and after), liveness answers at once.
            assert http.get(f"http://{rest}/healthz", timeout=3).status_code == 200
            assert _health(rpc) == SERVING
        rest_answers, grpc_answers, (readyz,) = answers[:10], answers[10:30], answers[30:]
        for answer in rest_answers:
            assert answer.status_code == 503 and answer.json()["error"] == "backend_unavailable"
            assert answer.headers["Retry-After"] == "5" and "REDIS_TIMEOUT" in answer.json()["message"]
        for error in grpc_answers:
            assert isinstance(error, grpc.RpcError)
            assert (error.code(), error_code(error)) == (grpc.StatusCode.UNAVAILABLE, "backend_unavailable")
        assert readyz.status_code == 503
        wait_for(lambda: _health(rpc, "msaas.v1.SeparationService") == NOT_SERVING, 20, "rpc to say not ready")
        assert _health(rpc) == SERVING and http.get(f"http://{rest}/healthz", timeout=3).status_code == 200
        assert thaw.is_alive()  # all of it while Redis was still frozen
    finally:
        thaw.cancel()
        own_redis.signal(signal.SIGCONT)
    wait_for(lambda: _get(status_url) == 200, 30, "REST to serve statuses again")
    assert stub(rpc).GetStatus(pb.StatusRequest(songhash=SONGHASH), timeout=10).state == pb.SongStatus.STATE_QUEUED
    wait_for(lambda: _health(rpc, "msaas.v1.SeparationService") == SERVING, 20, "rpc to be ready again")

