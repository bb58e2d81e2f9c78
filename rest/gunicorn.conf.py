"""gunicorn settings for the REST service (`gunicorn -c rest/gunicorn.conf.py 'rest:create_app()'`).

Worker model: gevent, one greenlet per connection (`rest/gunicorn_worker.py`, which also answers gunicorn's
own 400/414/431 refusals in the API's JSON error shape). A request spends most of its time waiting: on the
client's upload, on Redis, on the object store. With threads, each slow client held one of a fixed few (2 x 8
gthread threads): 17 connections sending a byte every 2 s took them all and /healthz went unanswered. A greenlet
costs kilobytes, so slow clients only hold their own connections while probes and other clients are served.
They are not held for ever either, two read deadlines free them:
- headers: gevent's worker parses a request's line and headers under a `gevent.Timeout` of `keepalive` seconds
  (gunicorn/workers/base_async.py, `timeout_ctx`), then closes the connection; the same bound ends an idle
  keep-alive connection. It must not be 0 (gunicorn would then read headers with no deadline).
- body: REST reads `wsgi.input` at an average of at least BODY_MIN_RATE bytes per second after
  BODY_GRACE_SECONDS of slack, or answers 408 (rest/limits.py).
What the gevent worker changes for the code: sockets, `threading`, `subprocess` and `time.sleep` are cooperative
(gevent's monkey patching, below and again in each worker before the app is imported), so redis-py, minio's
urllib3, prometheus-client's multiprocess files and the ffmpeg that checks an upload (msaas/audio.py, a subprocess
whose output is read in 1 MiB pieces) work unchanged; CPU work (pybase64, hashing, the streaming JSON reader)
runs between socket reads of 256 KiB pieces, so no request holds the loop for long. tests/test_observability.py
and tests/test_abuse.py run REST this way.

Connections, per worker process: `worker_connections` is the greenlet pool, and gevent stops accepting while it
is full, so new connections, probes included, wait in the listen queue. Deadlines alone did not keep it from
filling: 1,100 connections that never send a byte, reopened when closed, held 2 x 500 greenlets and /healthz
took 2-9 s (issue 20). Three things now keep the pool for requests (rest/gunicorn_worker.py):
- the kernel holds a connection until its first bytes arrive, or `keepalive` seconds (TCP_DEFER_ACCEPT): a
  silent one takes no greenlet, descriptor or place in the listen queue, so a probe is accepted at once;
- idle connections (accepted or kept alive, no request in flight) are capped, MAX_IDLE_CONNECTIONS_PER_CLIENT
  from one address and MAX_IDLE_CONNECTIONS in all, by closing the oldest idle one (rest/idle_connections.py),
  not the newcomer: a probe sharing an address with a flood sends its request at once and is served;
- the pool has REQUESTS_IN_FLIGHT greenlets more than the idle cap, so only that many requests in flight fill it.
A connection beyond the caps is closed, and an attacker reopens it: connections that each send a byte (past the
kernel's wait) churn through the listen queue, and a probe waits behind them (FLOOD_REST: about 0.2-0.3 s
with 1,100 from one address; bench/RESULTS.md). A separate, shorter deadline for a request's first byte was
weighed and left out: the kernel's wait and the caps already free silent connections under a flood, and
without one such a deadline would only cut off clients that connect before they need to (browsers' preconnect).
File descriptors: a request in flight may hold its connection, a spool file and one to Redis or the store; 1,500
connections per process fit the containers' 4,096 open files (the worker raises its soft limit as far as the
hard one allows, and warns if that is short).

The timeout is the master's heartbeat check: a worker process that stops answering it for that long (a loop
blocked by CPU work) is killed and replaced.

Metrics: each worker process counts on its own, so prometheus-client's multiprocess mode is switched on
here, in the master, before any worker imports it: every process writes its samples to files in
PROMETHEUS_MULTIPROC_DIR, and /metrics sums them whichever process answers the scrape.
"""

from gevent import monkey

# Before anything imports ssl or sockets: the master imports the worker class, and with it the app's modules.
monkey.patch_all()

import glob  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

from msaas.errors import ConfigError  # noqa: E402
from msaas.settings import Settings  # noqa: E402
from msaas.tenants import forking_server  # noqa: E402

settings = Settings.from_env()
bind = f"{settings.bind_host}:{settings.port}"
worker_class = "rest.gunicorn_worker.RestWorker"
workers = 2
REQUESTS_IN_FLIGHT = 500  # per process; a request in flight needs well under 1 MiB
worker_connections = settings.max_idle_connections + REQUESTS_IN_FLIGHT
keepalive = 5  # seconds for a request's headers to arrive, and for an idle keep-alive connection
timeout = 120
graceful_timeout = 30
accesslog = "-"

made_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if made_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="msaas-metrics-")

from prometheus_client import multiprocess  # noqa: E402 - reads PROMETHEUS_MULTIPROC_DIR on import


def on_starting(server) -> None:
    """Samples left by an earlier run would be summed into this one's: start from an empty folder. A tenants file
    that does not parse stops the server here, naming why."""
    for stale in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(stale)
    try:
        forking_server(settings.tenants_file, settings.api_keys, settings.admin_keys)
    except ConfigError as error:
        sys.exit(f"REST not started: {error}")


def pre_fork(server, worker) -> None:
    """A worker that starts while the tenants file is bad (restarted, or still importing the app when the file
    went bad) takes the last good tenants the master read, instead of failing to boot and taking the master, and
    every other worker, down with it (msaas/tenants.py, `forking_server`)."""
    try:
        forking_server(settings.tenants_file, settings.api_keys, settings.admin_keys)
    except ConfigError as error:  # only a TENANTS_FILE named anew by a reload (SIGHUP) whose file does not parse
        server.log.error("tenants not read: %s", error)


def post_fork(server, worker) -> None:
    """Each worker process gets the settings read here, before it starts serving."""
    worker.use(settings)


def child_exit(server, worker) -> None:
    """A worker that exits stops counting towards the live gauges; its counters stay in the sums."""
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    if made_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
