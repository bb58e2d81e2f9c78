"""Metrics and logs as an operator sees them: /metrics on REST (under gunicorn, two worker processes) and on a
worker, scraped before and after real jobs; log lines on the bus with their songhash; the logs service's filter."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from devstack.processes import Child, free_port
from msaas.connections import connect_redis
from msaas.jobqueue import JobQueue
from msaas.logbus import JsonFormatter, _Identity, readable
from msaas.naming import songhash_of
from support import ROOT, SHORT_SAMPLE, Statuses, child_env, job_for, start_service, wait_for

pytestmark = pytest.mark.demucs

SONG = SHORT_SAMPLE.read_bytes()
SONGHASH = songhash_of(SONG)
LOST = "f" * 56  # a job whose input is not in the store: it fails every attempt
SCRAPES = 8  # enough that both gunicorn worker processes answer some


def scrape(address: str) -> dict[tuple, float]:
    """Every sample of a scrape, by (name, labels)."""
    response = requests.get(f"http://{address}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def moved(before: dict, after: dict) -> dict[tuple, float]:
    """What changed between two scrapes (histogram buckets left out: their counts say the same)."""
    return {
        key: after[key] - before.get(key, 0.0)
        for key in after
        if after[key] != before.get(key, 0.0) and not key[0].endswith("_bucket") and not key[0].endswith("_created")
    }


def children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (from /proc: no extra package)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid:
            found.add(int(stat.parent.name))
    return found


@pytest.fixture
def gunicorn(settings, tmp_path) -> Iterator[Child]:
    """REST as in production: gunicorn with rest/gunicorn.conf.py (a master and two worker processes)."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "rest" / "gunicorn.conf.py"), "rest:create_app()"]
    child = Child("rest", command, child_env(settings, PORT=str(port)), tmp_path / "rest.log", port, ROOT)
    child.start()
    child.wait_ready()
    wait_for(lambda: len(children(child.process.pid)) == 2, 30, "gunicorn's two workers")
    yield child
    child.stop()


def test_metrics_move_by_exactly_one_per_job(settings, gunicorn, callback_receiver, tmp_path):
    gunicorn_rest = f"127.0.0.1:{gunicorn.port}"
    metrics_port = free_port()
    worker = start_service(
        "worker", settings, tmp_path / "worker.log", WORKER_METRICS_PORT=str(metrics_port), MAX_ATTEMPTS="2"
    )
    logs = start_service("logs", settings, tmp_path / "logs.out", LOGS_MIN_LEVEL="WARNING")
    worker_metrics = f"127.0.0.1:{metrics_port}"
    try:
        wait_for(lambda: _answers(worker_metrics), 30, "the worker's metrics server")
        rest_before, worker_before = scrape(gunicorn_rest), scrape(worker_metrics)

        answer = requests.post(
            f"http://{gunicorn_rest}/apiv1/separate", params={"callback_url": callback_receiver.url}, data=SONG,
            headers={"Content-Type": "audio/mpeg"},
        )
        assert answer.status_code == 200
        status = f"http://{gunicorn_rest}/apiv1/status/{SONGHASH}"
        wait_for(lambda: requests.get(status).json()["state"] == "done", 120, "the song to be separated")
        # The delivery threads count the callback once its answer is in, after "done".
        wait_for(lambda: requests.get(status).json()["callback"]["state"] == "delivered", 30, "the callback")
        worker_after = scrape(worker_metrics)

        # Every process of the gunicorn pool answers the same sums.
        for _ in range(SCRAPES):
            changes = moved(rest_before, scrape(gunicorn_rest))
            requests_seen = {key: value for key, value in changes.items() if key[0] == "msaas_http_requests_total"}
            assert {key: value for key, value in changes.items() if key not in requests_seen} == {
                ("msaas_jobs_enqueued_total", ()): 1.0,
                ("msaas_upload_bytes_count", ()): 1.0,
                ("msaas_upload_bytes_sum", ()): float(len(SONG)),
                ("msaas_tenant_songs_total", (("tenant", "open"),)): 1.0,
            }
            separate = ("msaas_http_requests_total", (("method", "POST"), ("route", "/apiv1/separate"),
                                                      ("status", "200")))
            assert requests_seen[separate] == 1.0
        # Whichever process counted the upload, its count outlives it: kill both workers; their replacements,
        # which saw nothing, still report it (gunicorn's child_exit hook marks the dead ones).
        master, workers = gunicorn.process.pid, children(gunicorn.process.pid)
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: len(children(master) - workers) == 2, 30, "two new gunicorn workers")
        wait_for(lambda: _answers(gunicorn_rest), 30, "the new workers to answer")
        assert moved(rest_before, scrape(gunicorn_rest))[("msaas_jobs_enqueued_total", ())] == 1.0
        model = (("model", "demucs_unittest"),)
        changes = moved(worker_before, worker_after)
        seconds = changes.pop(("msaas_separation_seconds_sum", model))
        factor = changes.pop(("msaas_separation_realtime_factor_sum", model))
        assert changes == {
            ("msaas_jobs_completed_total", ()): 1.0,
            ("msaas_separation_seconds_count", model): 1.0,
            ("msaas_separation_realtime_factor_count", model): 1.0,
            ("msaas_callbacks_total", (("outcome", "delivered"),)): 1.0,
        }
        assert factor == pytest.approx(seconds / 8.0, rel=0.05)  # the sample is 8 s long

        # A job that fails every attempt: one retry, then the dead-letter list.
        JobQueue(connect_redis(settings), settings.worker_queue, settings.demucs_model).push(job_for(LOST, settings))
        wait_for(lambda: Statuses(settings).get(LOST).get("state") == "failed", 60, "the dead job")
        assert moved(worker_after, scrape(worker_metrics)) == {
            ("msaas_jobs_failed_total", ()): 2.0,
            ("msaas_jobs_retried_total", (("cause", "failed"),)): 1.0,
            ("msaas_jobs_dead_lettered_total", ()): 1.0,
        }
        depths = scrape(gunicorn_rest)
        assert [depths[(name, ())] for name in ("msaas_queue_depth", "msaas_processing_depth",
                                                "msaas_dead_letter_depth")] == [0.0, 0.0, 1.0]

        # The logs service printed the failures and nothing below WARNING.
        printed = wait_for(lambda: "after 2 attempts" in (text := (tmp_path / "logs.out").read_text()) and text,
                           10, "the failure's log line")
    finally:
        logs.stop()
        worker.stop()
    assert "test worker WARNING worker.loop: worker test-" in printed
    assert f"job {LOST} attempt 1 failed, retrying in" in printed
    assert "test worker ERROR worker.loop: worker test-" in printed
    assert " INFO " not in printed


def _answers(address: str) -> bool:
    try:
        return requests.get(f"http://{address}/metrics", timeout=2).ok
    except requests.ConnectionError:
        return False


# --- log lines -----------------------------------------------------------------------------------------------


def bus_line(message: str, *args, level: int = logging.INFO, **extra) -> dict:
    record = logging.LogRecord("msaas.songs", level, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    _Identity("pod-1", "rest").filter(record)
    return json.loads(JsonFormatter().format(record))


def test_bus_lines_carry_level_time_host_service_and_songhash():
    line = bus_line("song %s enqueued", SONGHASH)
    assert line["level"] == "INFO" and line["host"] == "pod-1" and line["service"] == "rest"
    assert line["songhash"] == SONGHASH and line["message"] == f"song {SONGHASH} enqueued"
    assert line["time"][:2] == "20" and "T" in line["time"]
    assert bus_line("queue emptied")["songhash"] is None
    assert bus_line("job done", songhash=SONGHASH)["songhash"] == SONGHASH  # extra={"songhash": ...}


def test_logs_service_prints_readably_and_filters_by_level():
    info = json.dumps(bus_line("song %s enqueued", SONGHASH))
    assert readable(info).endswith(f"pod-1 rest INFO msaas.songs: song {SONGHASH} enqueued")
    assert readable(info, logging.WARNING) is None
    named = json.dumps(bus_line("callback failed", level=logging.ERROR, songhash=SONGHASH))
    assert readable(named, logging.WARNING).endswith(f"ERROR msaas.songs: callback failed [song {SONGHASH}]")
    assert readable("an old plain line", logging.ERROR) == "an old plain line"  # not ours: printed as it came
