"""Tenants (issue 21) through the `msaas` command, over REST and over gRPC (`--server grpc://...`), the key in
$MSAAS_API_KEY: `msaas usage`, `msaas admin usage`, and a dead letter's round trip through `msaas admin dead
ls|show|retry|purge`. The command runs as `python -m msaas.cli` from this checkout, so it is this code under test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from msaas.cli import exits
from rest import create_app
from rpc import create_server
from support import ROOT, SHORT_SAMPLE, serve, start_service, wait_for
from test_tenants import ADMIN_KEY, KEYS, SONGHASH, tenants_file


class Servers:
    """REST and gRPC over the same tenants, as the command reaches them."""

    def __init__(self, rest: str, grpc: str) -> None:
        self.urls = {"rest": f"http://{rest}", "grpc": f"grpc://{grpc}"}

    def msaas(self, api: str, tenant: str | None, *arguments: str) -> subprocess.CompletedProcess:
        env = {name: value for name, value in os.environ.items() if not name.startswith("MSAAS_")}
        if tenant is not None:
            env["MSAAS_API_KEY"] = ADMIN_KEY if tenant == "admin" else KEYS[tenant]
        return subprocess.run([sys.executable, "-m", "msaas.cli", "--server", self.urls[api], *arguments], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)

    def json(self, api: str, tenant: str | None, *arguments: str) -> dict:
        ran = self.msaas(api, tenant, "--json", *arguments)
        assert ran.returncode == exits.OK, (api, arguments, ran.stdout, ran.stderr)
        return json.loads(ran.stdout)


@pytest.fixture
def servers(settings, tmp_path):
    path = tmp_path / "tenants.json"
    tenants_file(path)
    settings = replace(settings, tenants_file=path)
    rest, http = serve(create_app(settings))
    rpc = create_server(replace(settings, grpc_port=0), host="127.0.0.1")
    rpc.start()
    yield Servers(rest, f"127.0.0.1:{rpc.port}"), settings
    rpc.stop(grace=0)
    http.shutdown()


def test_usage_and_admin_usage_answer_alike_on_both_apis(servers):
    servers, _ = servers
    queued = servers.msaas("rest", "carol", "separate", "--no-wait", str(SHORT_SAMPLE))
    assert (queued.returncode, queued.stdout) == (exits.OK, SONGHASH + "\n"), queued.stderr
    for api in ("rest", "grpc"):
        shown = servers.msaas(api, "carol", "usage")
        assert (shown.returncode, shown.stdout) == (exits.OK, "tenant carol: 1 songs, 0.0 audio minutes separated, "
                                                              "0.00 CPU-hours\n"), (api, shown.stderr)
        assert servers.json(api, "carol", "usage") == {"tenant": "carol", "songs": 1.0, "audio_seconds": 0.0,
                                                       "cpu_seconds": 0.0}
        assert servers.json(api, "bob", "usage")["songs"] == 0.0
        every = servers.json(api, "admin", "admin", "usage")["tenants"]
        assert set(every) == {"alice", "bob", "carol", "open"} and every["carol"]["songs"] == 1.0, api
        table = servers.msaas(api, "admin", "admin", "usage").stdout.splitlines()
        assert "carol\t1 songs\t0 audio s\t0 CPU s" in table, (api, table)
        for tenant in ("carol", None):  # a tenant's key, and none, are refused the admin commands
            refused = servers.msaas(api, tenant, "admin", "usage")
            assert refused.returncode == exits.SERVER and refused.stderr.startswith("msaas: unauthorized: "), \
                (api, tenant, refused.stderr)
            assert servers.msaas(api, tenant, "admin", "dead", "ls").returncode == exits.SERVER
        nobody = servers.msaas(api, None, "usage")
        assert nobody.returncode == exits.SERVER and "a valid API key is required" in nobody.stderr, nobody.stderr


@pytest.mark.demucs
def test_a_dead_letter_is_listed_shown_retried_and_purged(servers, store, tmp_path):
    """A song whose input is gone from the store fails for good (MAX_ATTEMPTS=1): the admin lists it, reads why,
    queues it again, and once it has failed again, purges it; each step through both APIs where it reads."""
    servers, settings = servers
    assert servers.msaas("rest", "alice", "separate", "--no-wait", str(SHORT_SAMPLE)).returncode == exits.OK
    store.remove_input(SONGHASH)  # lost before any worker sees it

    def fails() -> None:
        worker = start_service("worker", settings, tmp_path / "worker.log", MAX_ATTEMPTS="1", WORKER_METRICS_PORT="0")
        try:
            wait_for(lambda: servers.msaas("rest", "alice", "status", SONGHASH).returncode == exits.SONG_FAILED, 60,
                     "the song to fail")
        finally:
            worker.stop()

    fails()
    listed = {api: servers.json(api, "admin", "admin", "dead", "ls")["dead"] for api in ("rest", "grpc")}
    assert listed["rest"] == listed["grpc"] and len(listed["rest"]) == 1
    letter = listed["rest"][0]
    assert (letter["songhash"], letter["tenant"], letter["attempts"]) == (SONGHASH, "alice", 1)
    assert f"the input queue/{SONGHASH}.mp3 is missing" in letter["reason"]
    assert letter["last_worker"].startswith(f"{settings.hostname}-")
    line = servers.msaas("grpc", "admin", "admin", "dead", "ls").stdout
    assert line.startswith(f"{letter['id']}\t{SONGHASH}\talice\t1 attempts\t"), line
    for api in ("rest", "grpc"):
        assert servers.json(api, "admin", "admin", "dead", "show", letter["id"]) == letter
        shown = servers.msaas(api, "admin", "admin", "dead", "show", letter["id"]).stdout.splitlines()
        assert {f"reason: {letter['reason']}", "attempts: 1", f"last_worker: {letter['last_worker']}"} <= set(shown)
        # alice's key is not an admin's: it neither sees nor touches the letter
        assert servers.msaas(api, "alice", "admin", "dead", "show", letter["id"]).returncode == exits.SERVER

    retried = servers.msaas("grpc", "admin", "admin", "dead", "retry", letter["id"])
    assert (retried.returncode, retried.stdout) == (exits.OK, "Job queued again\n"), retried.stderr
    status = servers.json("rest", "alice", "status", SONGHASH)
    assert (status["state"], status["position"], status["reason"]) == ("queued", 1, "requeued by an operator")
    assert servers.json("rest", "admin", "admin", "dead", "ls") == {"dead": []}
    assert servers.msaas("rest", "alice", "queue").stdout == SONGHASH + "\n"
    again = servers.msaas("rest", "admin", "admin", "dead", "retry", letter["id"])
    assert again.returncode == exits.NOT_FOUND and "dead_letter_not_found" in again.stderr

    fails()  # its input is still gone: it fails again, and is let go this time
    assert [entry["id"] for entry in servers.json("grpc", "admin", "admin", "dead", "ls")["dead"]] == [letter["id"]]
    purged = servers.msaas("rest", "admin", "admin", "dead", "purge", letter["id"])
    assert (purged.returncode, purged.stdout) == (exits.OK, "1 purged\n"), purged.stderr
    for api in ("rest", "grpc"):
        assert servers.json(api, "admin", "admin", "dead", "ls") == {"dead": []}
        assert servers.msaas(api, "admin", "admin", "dead", "purge").returncode == exits.USAGE  # needs an id or --all
        assert servers.json(api, "admin", "admin", "dead", "purge", "--all") == {"purged": 0}
    failed = servers.msaas("rest", "alice", "--json", "status", SONGHASH)
    assert failed.returncode == exits.SONG_FAILED and json.loads(failed.stdout)["state"] == "failed"
