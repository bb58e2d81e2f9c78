"""FLOOD_REST (issue 20, item 3): /healthz while floods of idle connections come and go, and with no flood, in one
run. Each flood holds its connections open and reopens each one as soon as REST closes it; /healthz is probed as
a kubelet does (a new connection each time) all along. Floods: connections that never send a byte (the issue's:
1,100 pushed /healthz from 9 ms to 2.1 s, p50), and beyond the issue, connections that send a request's first
byte and then nothing (past the kernel's wait for data, so they reach gunicorn at once), from one address and
from twenty."""

from __future__ import annotations

import socket
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.config import Plan
from bench.measure import percentile, tree_cpu_seconds
from bench.report import Check, Section, Table, ms
from bench.stack import Stack
from devstack.floods import IdleFlood, held_by_server

TITLE = "FLOOD_REST: /healthz under floods of idle connections"
TARGET_P99 = 0.5  # seconds, with 1,100 silent connections
PROBE_EVERY = 0.05
PROBE_TIMEOUT = 5.0  # an answer later than this counts as a failed probe (the readiness probe's timeoutSeconds)
SETTLE_SECONDS = 2.0  # the flood connects before probing starts
TWENTY = tuple(f"127.0.0.{host}" for host in range(2, 22))


@dataclass(frozen=True)
class Flood:
    name: str
    count: int
    sources: tuple[str, ...] = ("127.0.0.1",)
    greeting: bytes = b""


FLOODS = [
    Flood("none", 0),
    Flood("silent, one address", 1100),
    Flood("silent, one address", 2000),
    Flood("first byte only, one address", 1100, greeting=b"G"),
    Flood("first byte only, 20 addresses", 2000, TWENTY, b"G"),
    Flood("first byte only, 20 addresses", 3000, TWENTY, b"G"),
]


@dataclass(frozen=True)
class Phase:
    flood: Flood
    latencies: list[float]
    failed: int
    held: int  # connections from the flood REST held open, the median of the counts taken
    closed_per_second: float  # connections REST closed (the flood reopened each)
    cpu: float  # REST's CPU time over the phase's wall time (cores)


def run(plan: Plan, scratch: Path) -> list[Section]:
    with Stack(scratch / "flood", plan.model, workers=0) as stack:
        phases = []
        for flood in FLOODS:
            phases.append(_phase(stack, flood, plan.flood_seconds))
            print(f"FLOOD_REST {flood.count} {flood.name}: {_summary(phases[-1])}", flush=True)
    return [_section(phases, plan.flood_seconds)]


def _phase(stack: Stack, flood: Flood, seconds: float) -> Phase:
    port = stack.settings.port
    with IdleFlood(port, flood.count, flood.sources, flood.greeting) as connections:
        time.sleep(SETTLE_SECONDS if flood.count else 0)
        held = _Held(port, set(flood.sources) if flood.count else set())
        cpu, reopened, started = tree_cpu_seconds(stack.rest_pid), connections.reopened, time.monotonic()
        latencies, failed = [], 0
        with held:
            while time.monotonic() - started < seconds:
                begun = time.perf_counter()
                failed += not _probe(port)
                latencies.append(time.perf_counter() - begun)  # a failed probe counts with the time it took
                time.sleep(PROBE_EVERY)
        elapsed = time.monotonic() - started
        closed = (connections.reopened - reopened) / elapsed
        cpu = (tree_cpu_seconds(stack.rest_pid) - cpu) / elapsed
    time.sleep(SETTLE_SECONDS)  # what REST still holds from this flood goes before the next
    return Phase(flood, latencies, failed, int(statistics.median(held.counts)), closed, cpu)


class _Held:
    """Counts, every 0.5 s while in use, the connections from `sources` REST holds open."""

    def __init__(self, port: int, sources: set[str]) -> None:
        self.port, self.sources, self.counts = port, sources, [0]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> _Held:
        if self.sources:
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stopping.set()
        if self.sources:
            self._thread.join()

    def _poll(self) -> None:
        while not self._stopping.wait(0.5):
            held = held_by_server(self.port)
            self.counts.append(sum(held[source] for source in self.sources))


def _probe(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT) as connection:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            return connection.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _p(phase: Phase, percent: float) -> float:
    return percentile(phase.latencies, percent)


def _summary(phase: Phase) -> str:
    return (f"p50 {ms(_p(phase, 50))}, p99 {ms(_p(phase, 99))}, max {ms(max(phase.latencies))}, "
            f"failed {phase.failed} of {len(phase.latencies)}, held {phase.held}, "
            f"closed {phase.closed_per_second:.0f}/s, CPU {phase.cpu:.2f}")


def _section(phases: list[Phase], seconds: float) -> Section:
    notes = [
        f"REST as deployed (gunicorn, rest/gunicorn.conf.py, the default settings: at most "
        "MAX_IDLE_CONNECTIONS_PER_CLIENT=100 idle connections per address and MAX_IDLE_CONNECTIONS=1000 in all, per "
        "worker process, of 2). Each flood opens its connections, waits "
        f"{SETTLE_SECONDS:g} s, then /healthz is probed every {PROBE_EVERY * 1000:.0f} ms on a new connection for "
        f"{seconds:g} s (a kubelet's way) while the flood reopens every connection REST closes; a probe unanswered "
        f"within {PROBE_TIMEOUT:g} s fails and counts in the percentiles with the time it took. Silent connections "
        "wait in the kernel until their first byte or `keepalive` (5 s, 7 s of SYN-ACK retransmissions) has passed "
        "(TCP_DEFER_ACCEPT); those that send a byte reach gunicorn at once, where the caps close the oldest. "
        "Held: connections from the flood REST's processes held open (the median of counts every 0.5 s, from "
        "/proc/net/tcp; under churn a count may see a connection closing and its successor both); "
        "closed: connections REST closed per second, each reopened by the flood; CPU: REST's processes, in cores.",
    ]
    rows = [
        [f"{phase.flood.count:,}", phase.flood.name, ms(_p(phase, 50)), ms(_p(phase, 99)), ms(max(phase.latencies)),
         f"{phase.failed} of {len(phase.latencies)}", str(phase.held), f"{phase.closed_per_second:.0f}",
         f"{phase.cpu:.2f}"]
        for phase in phases
    ]
    table = Table(["connections", "flood", "p50", "p99", "max", "failed", "held", "closed/s", "CPU"], rows)
    by_count = {(phase.flood.count, phase.flood.greeting, phase.flood.sources): phase for phase in phases}
    none, target = by_count[(0, b"", ("127.0.0.1",))], by_count[(1100, b"", ("127.0.0.1",))]
    failed = sum(phase.failed for phase in phases)
    checks = [
        Check("/healthz p99, no flood", ms(_p(none, 99))),
        Check("/healthz p99, 1,100 silent connections", ms(_p(target, 99)), f"≤ {ms(TARGET_P99)}",
              _p(target, 99) <= TARGET_P99 and target.failed == 0),
        Check("/healthz max, any flood", ms(max(max(phase.latencies) for phase in phases)),
              f"< {PROBE_TIMEOUT:g} s (no probe failed)", failed == 0),
    ]
    return Section(TITLE, notes, [("/healthz by flood:", table)], checks)
