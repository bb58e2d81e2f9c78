"""gunicorn settings for the REST service (`gunicorn -c rest/gunicorn.conf.py 'rest:create_app()'`).

Threads, not processes, carry concurrency: a request spends most of its time receiving an upload or
waiting on Redis and the object store. The timeout leaves room for a large upload over a slow link.

Metrics: each worker process counts on its own, so prometheus-client's multiprocess mode is switched on
here, in the master, before any worker imports it: every process writes its samples to files in
PROMETHEUS_MULTIPROC_DIR, and /metrics sums them whichever process answers the scrape.
"""

import glob
import os
import shutil
import tempfile

bind = f"0.0.0.0:{os.environ.get('PORT', '5000')}"
worker_class = "gthread"
workers = 2
threads = 8
timeout = 120
graceful_timeout = 30
accesslog = "-"

made_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if made_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="msaas-metrics-")

from prometheus_client import multiprocess  # noqa: E402 - reads PROMETHEUS_MULTIPROC_DIR on import


def on_starting(server) -> None:
    """Samples left by an earlier run would be summed into this one's: start from an empty folder."""
    for stale in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(stale)


def child_exit(server, worker) -> None:
    """A worker that exits stops counting towards the live gauges; its counters stay in the sums."""
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    if made_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
