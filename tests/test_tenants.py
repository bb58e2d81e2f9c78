"""Tenants (issue 21): three tenants against real processes. Each sees only what it submitted, shares separations
without sharing control, is held to its own limits, and rotates its keys without a failed request."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import replace

import pytest
import requests
from test_observability import children

from devstack.processes import Child, free_port
from msaas.errors import ConfigError
from msaas.naming import songhash_of
from msaas.tenants import RELOAD_SECONDS, Tenants
from rest import create_app
from support import GUNICORN, ROOT, SHORT_SAMPLE, child_env, queued, serve, start_service, wait_for

SONG = SHORT_SAMPLE.read_bytes()
SONGHASH = songhash_of(SONG)
KEYS = {"alice": "alice-key-1", "bob": "bob-key-1", "carol": "carol-key-1"}
ADMIN_KEY = "admin-key-1"


def tenants_file(path, **limits) -> None:
    tenants = [{"name": name, "keys": [key], **limits.get(name, {})} for name, key in KEYS.items()]
    path.write_text(json.dumps({"tenants": tenants, "admin_keys": [ADMIN_KEY]}))


@pytest.fixture
def keyed(settings, tmp_path):
    """REST with three tenants and an admin key; yields (address, settings)."""
    path = tmp_path / "tenants.json"
    tenants_file(path)
    settings = replace(settings, tenants_file=path)
    address, server = serve(create_app(settings))
    yield address, settings
    server.shutdown()


def call(address: str, method: str, path: str, tenant: str, **kwargs) -> requests.Response:
    key = ADMIN_KEY if tenant == "admin" else KEYS[tenant]
    return requests.request(method, f"http://{address}{path}", headers={"Authorization": f"Bearer {key}"}, **kwargs)


def submit(address: str, tenant: str, mp3: bytes = SONG, **fields) -> requests.Response:
    return call(address, "POST", "/apiv1/separate", tenant, json={"mp3": base64.b64encode(mp3).decode(), **fields})


def test_another_tenants_song_answers_exactly_as_an_unknown_one(keyed):
    address, _ = keyed
    assert submit(address, "alice").json()["reason"] == "Song enqueued for separation"
    unknown = "0" * 56
    for path, method in (("/apiv1/status/{}", "GET"), ("/apiv1/track/{}/vocals.mp3", "GET"),
                         ("/apiv1/track/{}/vocals.mp3?redirect=1", "GET"), ("/apiv1/remove/{}/vocals.mp3", "DELETE"),
                         ("/apiv1/remove/{}", "DELETE")):
        theirs = call(address, method, path.format(SONGHASH), "bob", allow_redirects=False)
        nobodys = call(address, method, path.format(unknown), "bob", allow_redirects=False)
        assert theirs.status_code == nobodys.status_code == 404, path
        assert theirs.json()["error"] == nobodys.json()["error"], path
        assert theirs.json()["message"].replace(SONGHASH, unknown) == nobodys.json()["message"], path
    cancelled = call(address, "POST", f"/apiv1/cancel/{SONGHASH}", "bob").json()
    assert cancelled["cancelled"] == 0
    assert call(address, "GET", "/apiv1/queue", "bob").json() == {"queue": [], "songs": [], "next": None}
    # Still there for its owner, still queued.
    assert call(address, "GET", "/apiv1/queue", "alice").json()["queue"] == [SONGHASH]
    assert call(address, "GET", f"/apiv1/status/{SONGHASH}", "alice").json()["state"] == "queued"


def test_keys_admin_routes_and_usage(keyed):
    address, _ = keyed
    assert requests.get(f"http://{address}/apiv1/queue").status_code == 401
    assert requests.get(f"http://{address}/apiv1/queue", headers={"Authorization": "Bearer nope"}).status_code == 401
    for tenant in KEYS:
        assert call(address, "GET", "/apiv1/admin/dead", tenant).status_code == 401
        assert call(address, "GET", "/apiv1/admin/usage", tenant).status_code == 401
    assert call(address, "GET", "/apiv1/admin/dead", "admin").json() == {"dead": [], "next": None}
    submit(address, "carol")
    assert call(address, "GET", "/apiv1/usage", "carol").json() == {
        "tenant": "carol", "songs": 1.0, "audio_seconds": 0.0, "cpu_seconds": 0.0}
    every = call(address, "GET", "/apiv1/admin/usage", "admin").json()["tenants"]
    assert set(every) == {"alice", "bob", "carol", "open"} and every["carol"]["songs"] == 1.0


@pytest.mark.demucs
def test_identical_uploads_separate_once_and_a_remove_drops_only_that_claim(keyed, store, tmp_path, callback_receiver):
    address, settings = keyed
    for tenant in ("alice", "bob"):
        answer = submit(address, tenant, callback={"url": callback_receiver.url, "data": {"tenant": tenant}})
        assert answer.status_code == 200
    assert queued(settings) == 1  # one job for both
    worker = start_service("worker", settings, tmp_path / "worker.log")
    try:
        for tenant in ("alice", "bob"):
            wait_for(lambda t=tenant: call(address, "GET", f"/apiv1/status/{SONGHASH}", t).json()["state"] == "done",
                     120, f"{tenant}'s song")
        wait_for(lambda: len(callback_receiver.received) == 2, 30, "both tenants' callbacks")
    finally:
        worker.stop()
    assert sorted(delivery["body"]["tenant"] for delivery in callback_receiver.received) == ["alice", "bob"]
    assert "separated in" in (tmp_path / "worker.log").read_text()
    assert (tmp_path / "worker.log").read_text().count("separated in") == 1
    alice = call(address, "GET", f"/apiv1/status/{SONGHASH}", "alice").json()
    assert alice["callback"]["state"] == "delivered"
    vocals = call(address, "GET", f"/apiv1/track/{SONGHASH}/vocals.mp3", "bob").content

    removed = call(address, "DELETE", f"/apiv1/remove/{SONGHASH}", "alice")
    assert removed.status_code == 200 and removed.json()["removed"] == 0  # bob still holds the song
    assert call(address, "GET", f"/apiv1/status/{SONGHASH}", "alice").status_code == 404
    assert call(address, "GET", f"/apiv1/track/{SONGHASH}/vocals.mp3", "bob").content == vocals
    assert store.has_input(SONGHASH)
    removed = call(address, "DELETE", f"/apiv1/remove/{SONGHASH}", "bob")
    assert removed.json()["removed"] == 9  # the last claim: four tracks, their waveforms and the input
    assert list(store.client.list_objects(settings.output_bucket, recursive=True)) == []


def test_a_cancel_by_one_claimant_leaves_the_song_to_the_other(keyed):
    address, settings = keyed
    submit(address, "alice")
    submit(address, "bob")
    assert call(address, "POST", f"/apiv1/cancel/{SONGHASH}", "alice").json()["cancelled"] == 1
    assert call(address, "GET", f"/apiv1/status/{SONGHASH}", "alice").json()["state"] == "cancelled"
    assert call(address, "GET", f"/apiv1/status/{SONGHASH}", "bob").json()["state"] == "queued"
    assert queued(settings) == 1
    call(address, "POST", f"/apiv1/cancel/{SONGHASH}", "bob")
    assert queued(settings) == 0
    assert call(address, "GET", f"/apiv1/status/{SONGHASH}", "bob").json()["state"] == "cancelled"


def test_each_limit_answers_429_naming_it(settings, tmp_path):
    path = tmp_path / "tenants.json"
    tenants_file(path, alice={"requests_per_minute": 3}, bob={"songs_queued": 1},
                 carol={"audio_minutes_per_day": 0.2})  # 12 s a day: one 8 s song
    address, server = serve(create_app(replace(settings, tenants_file=path)))
    try:
        answers = [call(address, "GET", "/apiv1/queue", "alice") for _ in range(4)]
        assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
        assert answers[-1].json()["error"] == "too_many_requests" and int(answers[-1].headers["Retry-After"]) <= 60
        assert call(address, "GET", "/apiv1/queue", "bob").status_code == 200  # alice's limit is alice's

        assert submit(address, "bob").status_code == 200
        second = submit(address, "bob", SONG + b"\0" * 4)  # another song (another hash)
        assert second.status_code == 429 and second.json()["error"] == "songs_queued"
        assert "1 songs queued" in second.json()["message"] and second.headers["Retry-After"]

        assert submit(address, "carol").status_code == 200
        over = submit(address, "carol", SONG + b"\0" * 4)
        assert over.status_code == 429 and over.json()["error"] == "audio_minutes_per_day"
        assert 0 < int(over.headers["Retry-After"]) <= 86400
    finally:
        server.shutdown()


def test_a_key_rotates_without_a_failed_request(settings, tmp_path):
    """Tenants are read again when the file changes: add the new key, move the client to it, drop the old one."""
    path = tmp_path / "tenants.json"
    tenants_file(path)
    app = create_app(replace(settings, tenants_file=path))
    address, server = serve(app)
    key = {"now": KEYS["alice"]}
    statuses: list[int] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            answer = requests.get(f"http://{address}/apiv1/queue", headers={"Authorization": f"Bearer {key['now']}"})
            statuses.append(answer.status_code)
            time.sleep(0.05)

    worker = threading.Thread(target=client)
    worker.start()
    try:
        both = json.loads(path.read_text())
        both["tenants"][0]["keys"] = [KEYS["alice"], "alice-key-2"]
        path.write_text(json.dumps(both))
        new = {"Authorization": "Bearer alice-key-2"}
        wait_for(lambda: requests.get(f"http://{address}/apiv1/queue", headers=new).ok, 3 * RELOAD_SECONDS,
                 "the new key to be taken")
        key["now"] = "alice-key-2"
        time.sleep(0.5)
        both["tenants"][0]["keys"] = ["alice-key-2"]
        path.write_text(json.dumps(both))
        old = {"Authorization": f"Bearer {KEYS['alice']}"}
        wait_for(lambda: requests.get(f"http://{address}/apiv1/queue", headers=old).status_code == 401,
                 3 * RELOAD_SECONDS, "the old key to be dropped")
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join()
        server.shutdown()
    assert len(statuses) > 20 and set(statuses) == {200}


def test_a_broken_tenants_file_keeps_the_last_good_one(settings, tmp_path):
    path = tmp_path / "tenants.json"
    tenants_file(path)
    app = create_app(replace(settings, tenants_file=path))
    client = app.test_client()
    path.write_text("{not json")
    app.extensions["msaas"].tenants.reload()
    answer = client.get("/apiv1/queue", headers={"Authorization": f"Bearer {KEYS['alice']}"})
    assert answer.status_code == 200


def test_a_tenants_file_that_appears_later_is_taken_and_one_that_goes_falls_back_to_api_keys(tmp_path):
    """The manifests mount an optional Secret: until it exists, API_KEYS decides; once it does, its tenants."""
    path = tmp_path / "tenants.json"
    tenants = Tenants(path, api_keys="plain-key")
    assert tenants.current().find("plain-key") is not None and tenants.current().find(KEYS["alice"]) is None
    tenants_file(path)
    assert tenants.reload().find(KEYS["alice"]).name == "alice"
    assert tenants.current().find("plain-key") is None
    path.unlink()
    assert tenants.reload().find("plain-key") is not None


def test_a_tenants_file_that_does_not_parse_fails_start_up_naming_why(tmp_path):
    path = tmp_path / "tenants.json"
    for text, words in (("{not json", "not JSON"), ('{"tenants": [{"name": "Bad Name", "keys": ["k"]}]}', "name"),
                        ('{"tenants": [{"name": "a", "keys": []}]}', "keys"),
                        ('{"tenants": [{"name": "a", "keys": ["k"], "weight": 0}]}', "weight"),
                        ('{"tenants": [{"name": "a", "keys": ["k"]}, {"name": "b", "keys": ["k"]}]}', "also"),
                        ('{"tenants": [{"name": "a", "keys": ["cl\u00e9"]}]}', "printable ASCII"),
                        ('{"tenants": [{"name": "a", "keys": ["k k"]}]}', "printable ASCII"),
                        ('{"tenants": [], "admin_keys": ["\u5bc6\u94a5"]}', "printable ASCII")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=words):
            Tenants(path)


def test_a_tenants_file_swapped_for_dev_zero_keeps_the_last_good_one(settings, tmp_path):
    """TENANTS_FILE turned into a link to /dev/zero (or a FIFO, or a huge file) was read whole, in a request: the
    process grew until it died. Now REST, as deployed, keeps the last good tenants and says why; its address space
    is capped here, so the old behaviour fails the test instead of the machine."""
    path = tmp_path / "tenants.json"
    tenants_file(path)
    port = free_port()
    rest = Child("rest", ["prlimit", f"--as={2 << 30}", "--", *GUNICORN],
                 child_env(replace(settings, tenants_file=path), PORT=str(port)), tmp_path / "rest.log", port, ROOT)
    rest.start()
    try:
        rest.wait_ready()
        headers = {"Authorization": f"Bearer {KEYS['alice']}"}
        wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/apiv1/queue", headers=headers, timeout=5).ok, 30,
                 "REST to serve alice")
        (tmp_path / "zero").symlink_to("/dev/zero")
        os.replace(tmp_path / "zero", path)
        answers = []
        deadline = time.monotonic() + 3 * RELOAD_SECONDS
        while time.monotonic() < deadline:
            try:
                answers.append(requests.get(f"http://127.0.0.1:{port}/apiv1/queue", headers=headers, timeout=5)
                               .status_code)
            except requests.RequestException as error:
                answers.append(type(error).__name__)
            time.sleep(0.2)
    finally:
        rest.stop()
    assert set(answers) == {200}, answers
    assert "is not a regular file" in (tmp_path / "rest.log").read_text()


def test_rest_workers_started_while_the_tenants_file_is_bad_serve_the_last_good_one(settings, tmp_path):
    """gunicorn starts a worker (one died, or was still importing the app) while TENANTS_FILE does not parse: the
    worker failed to boot, and gunicorn's master shut the whole server down with it (CI saw it). Now the worker
    takes the last good tenants its master read; here both workers are killed, then gunicorn is reloaded (SIGHUP),
    and each time their successors serve alice."""
    path = tmp_path / "tenants.json"
    tenants_file(path)
    port = free_port()
    rest = Child("rest", GUNICORN, child_env(replace(settings, tenants_file=path), PORT=str(port)),
                 tmp_path / "rest.log", port, ROOT)
    rest.start()
    try:
        rest.wait_ready()
        headers = {"Authorization": f"Bearer {KEYS['alice']}"}
        url = f"http://127.0.0.1:{port}/apiv1/queue"
        first = wait_for(lambda: len(found := children(rest.process.pid)) == 2 and found, 30, "two workers")
        wait_for(lambda: requests.get(url, headers=headers, timeout=5).ok, 30, "REST to serve alice")
        path.write_text('{"tenants": [{"name": "alice", "keys": ')  # cut off mid-write
        for pid in first:
            os.kill(pid, signal.SIGKILL)
        second = wait_for(lambda: len(found := children(rest.process.pid)) == 2 and not found & first and found,
                          30, "two new workers")
        wait_for(lambda: (tmp_path / "rest.log").read_text().count("not read at this process's start") == 2, 60,
                 "both new workers to have read the bad file")
        answers = [requests.get(url, headers=headers, timeout=5).status_code for _ in range(20)]
        stranger = requests.get(url, headers={"Authorization": "Bearer nobody"}, timeout=5).status_code
        assert children(rest.process.pid) == second  # the new workers served, and stayed up
        # gunicorn's reload (SIGHUP) reads its configuration file again and starts new workers: the same holds.
        os.kill(rest.process.pid, signal.SIGHUP)
        wait_for(lambda: len(found := children(rest.process.pid)) == 2 and not found & (first | second), 30,
                 "two workers after the reload")
        wait_for(lambda: (tmp_path / "rest.log").read_text().count("not read at this process's start") == 4, 60,
                 "the reloaded workers to have read the bad file")
        answers += [requests.get(url, headers=headers, timeout=5).status_code for _ in range(10)]
    finally:
        rest.stop()
    assert set(answers) == {200}, answers
    assert stranger == 401
    # A server that starts with the bad file stops, naming why, as before.
    started = subprocess.run(GUNICORN, env=child_env(replace(settings, tenants_file=path), PORT=str(free_port())),
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert started.returncode != 0
    assert "REST not started: the tenants file is not JSON" in started.stderr, started.stderr[-2000:]
