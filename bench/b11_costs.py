"""COSTS (issue 20, item 5): what requests cost as the queue and the keyspace grow, in one run, against REST as
deployed (gunicorn) and `python -m rpc`, on a real redis-server, no worker (the songs stay queued).

1. A queued song's status polled at 20 requests/s (a page polling each of 20 songs once a second: the 20 queued
   last, so each estimate looks at the most jobs ahead), REST and gRPC GetStatus, and /metrics scraped once a
   second meanwhile, with 100 songs queued, then with 10,000 (the backlog made as the APIs queue songs:
   devstack/backlog.py). Latency counts from when a request was due, so a service falling behind shows.
2. Cancel and remove, one song at a time (queued songs, so each cancels a job), and the status poll and /metrics
   again, among no other songs' records, then among 300,000 (done songs, each with its status, owner, results and
   claim: 1.2 million keys), the 10,000 still queued.
Targets (issue 20): status p99 <= 50 ms with 100 and with 10,000 queued; remove and cancel <= 50 ms among 300,000.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import requests

from bench.b7_grpc import RpcService
from bench.config import Plan
from bench.measure import percentile
from bench.report import Check, Section, Table, ms
from bench.stack import Stack
from devstack import backlog
from msaas.connections import connect_redis
from msaas.v1 import separation_pb2 as pb

TITLE = "COSTS: requests as the queue and the keyspace grow (REST under gunicorn, gRPC, real Redis)"
RATE = 20.0  # status requests a second, all songs together
POLLED = 20
SCRAPE_EVERY = 1.0
ONE_AT_A_TIME = 20  # cancels, and removes, per phase
TARGET = 0.050
QUEUES = (100, 10_000)
TIMEOUT = 60.0
WARM_UP_SECONDS = 3.0


@dataclass
class Latencies:
    """Seconds each request took, and how many failed (a failure counts with the time it took)."""

    seconds: list[float]
    failed: int = 0

    def p(self, percent: float) -> float:
        return percentile(self.seconds, percent)

    def summary(self) -> str:
        return (f"p50 {ms(self.p(50))}, p99 {ms(self.p(99))}, max {ms(max(self.seconds))}, "
                f"{self.failed} of {len(self.seconds)} failed")


def run(plan: Plan, scratch: Path) -> list[Section]:
    with Stack(scratch / "costs", plan.model, workers=0, rest_env={"RATE_LIMIT_PER_MINUTE": "0"}) as stack:
        stack.settings = replace(stack.settings, rate_limit_per_minute=0)  # the gRPC server's, as REST's
        rpc = RpcService(stack)
        try:
            rpc.restart()
            return [_measure(plan, stack, rpc)]
        finally:
            rpc.child.stop()


def _measure(plan: Plan, stack: Stack, rpc: RpcService) -> Section:
    connection = connect_redis(stack.settings)
    settings = stack.settings
    rows: dict[tuple[str, str], Latencies] = {}
    backlog.queue_songs(connection, settings.worker_queue, settings.demucs_model, QUEUES[0])
    queued = QUEUES[0]
    warm_up: dict[tuple[str, str], Latencies] = {}  # each process' first requests (imports, connections): not kept
    _poll(stack, rpc, [backlog.songhash(index) for index in range(queued)], WARM_UP_SECONDS, "warm-up", warm_up)
    for size in QUEUES:
        made = time.monotonic()
        backlog.queue_songs(connection, settings.worker_queue, settings.demucs_model, size - queued, queued)
        print(f"COSTS: {size} queued ({time.monotonic() - made:.1f} s to queue them)", flush=True)
        queued = size
        polled = [backlog.songhash(index) for index in range(size - POLLED, size)]
        _poll(stack, rpc, polled, plan.costs_seconds, f"{size:,} queued", rows)
    songs = iter(range(ONE_AT_A_TIME, queued - POLLED))  # queued songs to cancel and remove, never the polled
    for others in (0, plan.costs_other_songs):
        made = time.monotonic()
        backlog.other_songs(connection, others)
        where = f"{others:,} other songs"
        print(f"COSTS: {where} ({time.monotonic() - made:.1f} s to make them; {connection.dbsize():,} keys)",
              flush=True)
        polled = [backlog.songhash(index) for index in range(queued - POLLED, queued)]
        _poll(stack, rpc, polled, plan.costs_seconds, where, rows)
        for name, method, path in (("REST cancel", "POST", "/apiv1/cancel/{}"),
                                   ("REST remove", "DELETE", "/apiv1/remove/{}")):
            picked = [backlog.songhash(next(songs)) for _ in range(ONE_AT_A_TIME)]
            rows[(name, where)] = _one_at_a_time(lambda song, m=method, p=path: _rest(m, stack.url + p.format(song)),
                                                 picked)
            print(f"COSTS {name}, {where}: {rows[(name, where)].summary()}", flush=True)
        picked = [backlog.songhash(next(songs)) for _ in range(ONE_AT_A_TIME)]
        rows[("gRPC CancelSong", where)] = _one_at_a_time(
            lambda song: rpc.stub.CancelSong(pb.SongRequest(songhash=song), timeout=TIMEOUT), picked)
    return _section(rows, plan)


def _poll(stack: Stack, rpc: RpcService, polled: list[str], seconds: float, where: str,
          rows: dict[tuple[str, str], Latencies]) -> None:
    """REST's status route, then gRPC GetStatus, at RATE requests a second for `seconds` each, /metrics meanwhile."""
    scrapes = _Scrapes(f"{stack.url}/metrics")
    with scrapes:
        for name, call in (("REST status", lambda song: _rest("GET", f"{stack.url}/apiv1/status/{song}")),
                           ("gRPC GetStatus",
                            lambda song: rpc.stub.GetStatus(pb.StatusRequest(songhash=song), timeout=TIMEOUT))):
            rows[(name, where)] = _paced(call, polled, seconds)
            print(f"COSTS {name}, {where}: {rows[(name, where)].summary()}", flush=True)
    rows[("/metrics, meanwhile", where)] = scrapes.latencies


_local = threading.local()


def _rest(method: str, url: str) -> None:
    """One request on this thread's own connection (kept alive, as a browser's)."""
    if not hasattr(_local, "session"):
        _local.session = requests.Session()
    answer = _local.session.request(method, url, timeout=TIMEOUT)
    if answer.status_code != 200:
        raise RuntimeError(f"{method} {url}: {answer.status_code} {answer.text[:200]}")


def _timed(call: Callable[[str], object], song: str, due: float) -> tuple[float, bool]:
    try:
        call(song)
        return time.perf_counter() - due, True
    except Exception:  # noqa: BLE001 - counted as failed, with the time it took
        return time.perf_counter() - due, False


def _paced(call: Callable[[str], object], songs: list[str], seconds: float) -> Latencies:
    """`call` for each song in turn, RATE a second, each on time whether or not the ones before have answered."""
    count = int(seconds * RATE)
    futures = []
    with ThreadPoolExecutor(max_workers=64) as pool:
        start = time.perf_counter() + 0.1
        for number in range(count):
            due = start + number / RATE
            time.sleep(max(0.0, due - time.perf_counter()))
            futures.append(pool.submit(_timed, call, songs[number % len(songs)], due))
    results = [future.result() for future in futures]
    return Latencies([took for took, _ in results], sum(not ok for _, ok in results))


def _one_at_a_time(call: Callable[[str], object], songs: list[str]) -> Latencies:
    results = [_timed(call, song, time.perf_counter()) for song in songs]
    return Latencies([took for took, _ in results], sum(not ok for _, ok in results))


class _Scrapes:
    """/metrics scraped every SCRAPE_EVERY seconds while in use, as Prometheus would."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies = Latencies([])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._scrape, daemon=True)

    def __enter__(self) -> _Scrapes:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _scrape(self) -> None:
        while not self._stop.is_set():
            took, ok = _timed(lambda _: _rest("GET", self.url), "", time.perf_counter())
            self.latencies.seconds.append(took)
            self.latencies.failed += not ok
            self._stop.wait(max(0.0, SCRAPE_EVERY - took))


def _section(rows: dict[tuple[str, str], Latencies], plan: Plan) -> Section:
    table = Table(["request", "where", "p50", "p99", "max", "failed"],
                  [[name, where, ms(row.p(50)), ms(row.p(99)), ms(max(row.seconds)), f"{row.failed} of "
                    f"{len(row.seconds)}"] for (name, where), row in rows.items()])
    checks = []
    for size in QUEUES:
        for name in ("REST status", "gRPC GetStatus"):
            row = rows[(name, f"{size:,} queued")]
            checks.append(Check(f"{name} p99, {size:,} queued, {RATE:g}/s", ms(row.p(99)), f"<= {ms(TARGET)}",
                                row.p(99) <= TARGET and not row.failed))
    crowded = f"{plan.costs_other_songs:,} other songs"
    for name in ("REST cancel", "REST remove"):
        row = rows[(name, crowded)]
        checks.append(Check(f"{name}, slowest of {len(row.seconds)}, among {plan.costs_other_songs:,} other songs",
                            ms(max(row.seconds)), f"<= {ms(TARGET)}", max(row.seconds) <= TARGET and not row.failed))
    notes = [
        f"No worker: every song stays queued. Status is polled at {RATE:g} requests/s over the {POLLED} songs queued "
        f"last, for {plan.costs_seconds:g} s per API and size; latency counts from when each request was due. "
        f"/metrics is scraped every {SCRAPE_EVERY:g} s meanwhile. Cancel and remove run one at a time, "
        f"{ONE_AT_A_TIME} queued songs each (a remove cancels its job too). The phases run in the order of the "
        "table: the queue and the keyspace only grow during a run.",
    ]
    return Section(TITLE, notes, [("Latency of each request", table)], checks)
