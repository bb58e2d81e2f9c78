"""FLOOD_GRPC (issue 20): what clients that hold calls open, and a hung Redis, do to the other clients.

1. The gRPC health check's latency (`grpc.health.v1.Health/Check` of "", from a fresh channel each time, as a
   kubelet probes) with 130 Submit streams that each sent 1 KB and stall, against none, alternating rounds; and
   GetStatus' latency meanwhile.
2. Time to an answer while the stack's Redis is frozen (SIGSTOP): a REST status request and /readyz (503
   wanted), a gRPC GetStatus (UNAVAILABLE wanted), one at a time and in a burst of 20 side by side; /healthz and
   gRPC health "" meanwhile (answered at once wanted).
"""

from __future__ import annotations

import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.b7_grpc import RpcService
from bench.config import Plan
from bench.measure import percentile
from bench.report import Check, Section, Table, ms, seconds
from bench.stack import ROOT, Stack, upload
from msaas.naming import songhash_of
from msaas.v1 import separation_pb2 as pb
from msaas.v1 import separation_pb2_grpc as pb_grpc

TITLE_STALLS = "FLOOD_GRPC: gRPC health and GetStatus under 130 stalled Submit streams, and with none"
TITLE_FROZEN = "FLOOD_GRPC: time to an answer with Redis frozen (SIGSTOP), REST and gRPC"
STALLED = 130
ROUNDS = 3  # per side, alternating
PROBES = 40  # health checks per round, one every PROBE_EVERY seconds
PROBE_EVERY = 0.1
PROBE_TIMEOUT = 5.0  # a probe not answered by then counts as this long, and as failed
FROZEN_ROUNDS = 3
BURST = 20
PATIENCE = 45.0  # seconds a client waits with Redis frozen (it thaws after FROZEN_FOR, whatever happened)
FROZEN_FOR = 50.0
TARGET_HEALTH_P99 = 0.5
TARGET_TO_503 = 5.0
SONG = ROOT / "data" / "short-hum.mp3"


def run(plan: Plan, scratch: Path) -> list[Section]:
    mp3 = SONG.read_bytes()
    songhash = songhash_of(mp3)
    with Stack(scratch / "flood-grpc", plan.model, workers=0) as stack:  # no worker: the song stays queued
        rpc = RpcService(stack)
        try:
            rpc.restart()
            stack.submit(upload(mp3, raw=True))
            address = f"127.0.0.1:{rpc.settings.grpc_port}"
            stalls = _stall_rounds(address, songhash)
            frozen = _frozen_rounds(stack, address, songhash)
        finally:
            rpc.child.stop()
    return [_stalls_section(stalls), _frozen_section(frozen)]


# --- 1. stalled streams ----------------------------------------------------------------------------------


class _Stalled:
    """`count` Submit streams that each send a 1 KB chunk, then nothing until released."""

    def __init__(self, address: str, count: int) -> None:
        self.release = threading.Event()
        self.channel = grpc.insecure_channel(address)
        service = pb_grpc.SeparationServiceStub(self.channel)
        self.calls = [service.Submit.future(self._messages()) for _ in range(count)]

    def _messages(self) -> Iterator[pb.SubmitRequest]:
        yield pb.SubmitRequest(header=pb.SubmitHeader(), chunk=b"\xff" * 1000)
        self.release.wait(300)

    def close(self) -> int:
        """Release them; how many the server had ended already (refused or cut off)."""
        ended = sum(call.done() for call in self.calls)
        self.release.set()
        for call in self.calls:
            call.cancel()
        self.channel.close()
        return ended


def _timed(call: Callable[[], object]) -> tuple[float, bool]:
    started = time.perf_counter()
    try:
        call()
    except grpc.RpcError:
        return max(time.perf_counter() - started, 0.0), False
    return time.perf_counter() - started, True


def _health(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=PROBE_TIMEOUT)
    if answer.status != health_pb2.HealthCheckResponse.SERVING:
        raise RuntimeError(f"health answered {answer.status}")


def _probe_round(address: str, songhash: str) -> tuple[list[tuple[float, bool]], list[tuple[float, bool]]]:
    service = pb_grpc.SeparationServiceStub(grpc.insecure_channel(address))
    health, status = [], []
    for _ in range(PROBES):
        health.append(_timed(lambda: _health(address)))
        status.append(_timed(lambda: service.GetStatus(pb.StatusRequest(songhash=songhash), timeout=PROBE_TIMEOUT)))
        time.sleep(PROBE_EVERY)
    return health, status


def _stall_rounds(address: str, songhash: str) -> dict[str, dict]:
    sides: dict[str, dict] = {side: {"health": [], "status": [], "ended": 0} for side in ("none", "stalled")}
    for number in range(ROUNDS):
        for side in ("none", "stalled") if number % 2 == 0 else ("stalled", "none"):
            stalled = _Stalled(address, STALLED) if side == "stalled" else None
            if stalled is not None:
                time.sleep(2.0)  # every stream open and holding its 1 KB
            health, status = _probe_round(address, songhash)
            if stalled is not None:
                sides[side]["ended"] += stalled.close()
            sides[side]["health"] += health
            sides[side]["status"] += status
            print(f"FLOOD_GRPC round {number + 1}/{ROUNDS}, {side}: health p99 "
                  f"{ms(percentile([t for t, _ in health], 99))}, failed {sum(not ok for _, ok in health)}",
                  flush=True)
    return sides


def _stalls_section(sides: dict[str, dict]) -> Section:
    rows, checks = [], []
    for side, label in (("none", "no stalled streams"), ("stalled", f"{STALLED} stalled Submit streams")):
        for what in ("health", "status"):
            times = [t for t, _ in sides[side][what]]
            failed = sum(not ok for _, ok in sides[side][what])
            rows.append([label, "Health/Check \"\"" if what == "health" else "GetStatus", str(len(times)),
                         ms(statistics.median(times)), ms(percentile(times, 99)), ms(max(times)), str(failed)])
    stalled_health = [t for t, _ in sides["stalled"]["health"]]
    p99 = percentile(stalled_health, 99)
    failed = sum(not ok for _, ok in sides["stalled"]["health"] + sides["stalled"]["status"])
    checks = [
        Check("health p99, no stalled streams", ms(percentile([t for t, _ in sides["none"]["health"]], 99))),
        Check(f"health p99, {STALLED} stalled streams", ms(p99), f"≤ {ms(TARGET_HEALTH_P99)}",
              p99 <= TARGET_HEALTH_P99 and failed == 0),
        Check(f"health and GetStatus calls failed with {STALLED} stalled streams", str(failed), "0", failed == 0),
        Check("stalled streams the server had ended during a round (refused or cut off)",
              str(sides["stalled"]["ended"])),
    ]
    notes = [
        f"{ROUNDS} rounds per side, alternating. A round: {PROBES} health checks of \"\" (liveness), each from a "
        f"fresh channel (connection set-up included, as a kubelet probes), each followed by a GetStatus of a "
        f"queued song on one channel, {PROBE_EVERY:g} s apart. With stalls, {STALLED} Submit streams from one "
        "client each sent a 1 KB message first and nothing more, opened 2 s before the round (within the "
        "default BODY_GRACE_SECONDS, so none is cut off yet). A call not answered within "
        f"{PROBE_TIMEOUT:g} s counts as {PROBE_TIMEOUT:g} s and as failed. Issue 20 saw 66 stalled streams make "
        "health and GetStatus time out 5 of 5, and 130 make every call RESOURCE_EXHAUSTED.",
    ]
    table = Table(["streams", "call", "calls", "median", "p99", "max", "failed"], rows)
    return Section(TITLE_STALLS, notes, [("Latency:", table)], checks)


# --- 2. Redis frozen -------------------------------------------------------------------------------------


def _rest(url: str) -> tuple[float, str]:
    started = time.perf_counter()
    try:
        answer = requests.get(url, timeout=PATIENCE)
    except requests.RequestException as error:
        return time.perf_counter() - started, type(error).__name__
    return time.perf_counter() - started, str(answer.status_code)


def _grpc(call: Callable[[], object]) -> tuple[float, str]:
    started = time.perf_counter()
    try:
        call()
    except grpc.RpcError as error:
        return time.perf_counter() - started, error.code().name
    return time.perf_counter() - started, "OK"


def _frozen_rounds(stack: Stack, address: str, songhash: str) -> dict[str, list[tuple[float, str]]]:
    service = pb_grpc.SeparationServiceStub(grpc.insecure_channel(address))
    status_url = f"{stack.url}/apiv1/status/{songhash}"
    probes: dict[str, Callable[[], tuple[float, str]]] = {
        "REST GET /apiv1/status": lambda: _rest(status_url),
        "REST GET /readyz": lambda: _rest(f"{stack.url}/readyz"),
        "gRPC GetStatus": lambda: _grpc(lambda: service.GetStatus(pb.StatusRequest(songhash=songhash),
                                                                  timeout=PATIENCE)),
        "REST GET /healthz": lambda: _rest(f"{stack.url}/healthz"),
        "gRPC Health/Check \"\"": lambda: _grpc(lambda: _health(address)),
    }
    found: dict[str, list[tuple[float, str]]] = {name: [] for name in
                                                 [*probes, f"REST status, burst of {BURST}",
                                                  f"gRPC GetStatus, burst of {BURST}"]}
    for number in range(FROZEN_ROUNDS):
        stack.redis.signal(signal.SIGSTOP)
        thaw = threading.Timer(FROZEN_FOR, stack.redis.signal, (signal.SIGCONT,))
        thaw.start()
        try:
            for name, probe in probes.items():
                found[name].append(probe())
            with ThreadPoolExecutor(2 * BURST) as pool:
                rest = [pool.submit(_rest, status_url) for _ in range(BURST)]
                grpc_calls = [pool.submit(probes["gRPC GetStatus"]) for _ in range(BURST)]
                found[f"REST status, burst of {BURST}"] += [future.result() for future in rest]
                found[f"gRPC GetStatus, burst of {BURST}"] += [future.result() for future in grpc_calls]
        finally:
            thaw.cancel()
            stack.redis.signal(signal.SIGCONT)
        print(f"FLOOD_GRPC frozen round {number + 1}/{FROZEN_ROUNDS}: "
              + ", ".join(f"{name} {seconds(times[-1][0])} {times[-1][1]}" for name, times in found.items()),
              flush=True)
        _wait_ready(stack, service, songhash)
    return found


def _wait_ready(stack: Stack, service: pb_grpc.SeparationServiceStub, songhash: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            service.GetStatus(pb.StatusRequest(songhash=songhash), timeout=5)
            if requests.get(f"{stack.url}/readyz", timeout=5).ok:
                return
        except (grpc.RpcError, requests.RequestException):
            pass
        time.sleep(0.5)
    raise RuntimeError("the services did not recover within 60 s of Redis thawing")


def _span(value: float) -> str:
    return ms(value) if value < 1 else seconds(value)


def _frozen_section(found: dict[str, list[tuple[float, str]]]) -> Section:
    wanted = {"REST GET /apiv1/status": "503", "REST GET /readyz": "503", "gRPC GetStatus": "UNAVAILABLE",
              "REST GET /healthz": "200", "gRPC Health/Check \"\"": "OK", f"REST status, burst of {BURST}": "503",
              f"gRPC GetStatus, burst of {BURST}": "UNAVAILABLE"}
    rows, checks = [], []
    for name, answers in found.items():
        times = [t for t, _ in answers]
        codes = sorted({code for _, code in answers})
        rows.append([name, str(len(answers)), _span(statistics.median(times)), _span(max(times)), ", ".join(codes)])
        as_wanted = codes == [wanted[name]]
        if name in ("REST GET /apiv1/status", "gRPC GetStatus"):
            checks.append(Check(f"{name}: time to {wanted[name]}, worst", _span(max(times)),
                                f"≤ {seconds(TARGET_TO_503)}", max(times) <= TARGET_TO_503 and as_wanted))
        else:  # reported; judged only when the answer is not the one wanted
            checks.append(Check(f"{name}: {wanted[name]}, worst", _span(max(times)), "",
                                None if as_wanted else False))
    notes = [
        f"{FROZEN_ROUNDS} rounds: the stack's own Redis is frozen with SIGSTOP (it thaws after {FROZEN_FOR:g} s "
        "at the latest), then each request is sent once, one after the other, then a burst of "
        f"{BURST} REST status requests and {BURST} gRPC GetStatus calls side by side; then Redis thaws and the "
        f"next round waits until both APIs serve again. Clients wait up to {PATIENCE:g} s. REST: gunicorn as "
        "deployed (2 gevent workers); gRPC: `python -m rpc`; REDIS_TIMEOUT at its default. Issue 20 saw a status "
        "request take the whole freeze (130.6 s), and /readyz and every request wait ~40.7 s, then answer 200.",
    ]
    table = Table(["request", "sent", "median", "worst", "answers"], rows)
    return Section(TITLE_FROZEN, notes, [("Answers:", table)], checks)
