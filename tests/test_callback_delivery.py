"""Callbacks leave the separation loop: a real worker process records `done`, queues the callback, and its
delivery threads deliver it, however slow the receiver; a stopping or dying worker hands its callbacks on."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from test_faults import SONG, submit_batch, variant

from devstack.receivers import DrippingReceiver
from msaas.connections import connect_redis
from msaas.naming import songhash_of
from msaas.reliable import ReliableQueue
from rest import create_app
from support import serve, start_service, wait_for


def status(rest: str, songhash: str) -> dict:
    return requests.get(f"http://{rest}/apiv1/status/{songhash}").json()


def callback_state(rest: str, songhash: str) -> dict:
    return status(rest, songhash).get("callback", {})


@pytest.fixture
def rest_address(settings):
    address, server = serve(create_app(settings))
    yield address
    server.shutdown()


@pytest.fixture
def dripping():
    receiver = DrippingReceiver(interval=0.5, limit=600)  # five minutes of answer, unless released
    yield receiver
    receiver.close()


def test_a_dripping_receiver_does_not_hold_up_the_next_song(settings, rest_address, dripping, tmp_path):
    # One attempt with a generous deadline: the delivery is still under way while the next song separates.
    settings = replace(settings, callback_timeout=120.0, callback_attempts=1)
    worker = start_service("worker", settings, tmp_path / "worker.log")
    try:
        first = requests.post(
            f"http://{rest_address}/apiv1/separate", params={"callback_url": dripping.url},
            data=variant("first"), headers={"Content-Type": "audio/mpeg"},
        ).json()["hash"]
        [second] = submit_batch(rest_address, 1, "second")
        wait_for(lambda: status(rest_address, second)["state"] == "done", 90, "the second song, behind the first")
        # The receiver is still dripping its answer to the first song's callback, which waits on nothing else.
        assert dripping.dripping.is_set() and (dripping.finished, dripping.cut_off) == (0, 0)
        assert status(rest_address, first)["state"] == "done"
        assert callback_state(rest_address, first) == {
            "state": "pending", "delivered": False, "attempts": 0, "outcome": "pending",
        }
        dripping.released.set()
        wait_for(lambda: callback_state(rest_address, first).get("state") == "delivered", 30, "the callback")
        assert callback_state(rest_address, first) == {
            "state": "delivered", "delivered": True, "attempts": 1, "outcome": "200",
        }
    finally:
        worker.stop()


def test_a_failed_attempt_waits_in_the_queue_not_in_a_stopping_worker(settings, rest_address, callback_receiver,
                                                                     tmp_path):
    """A retry waits in the callback queue, not in a thread's sleep: a worker told to stop leaves at once, and
    whichever worker is running when the retry is due delivers it."""
    settings = replace(settings, callback_attempts=3, callback_backoff=8.0)
    callback_receiver.statuses = [503]
    worker = start_service("worker", settings, tmp_path / "worker-1.log")
    try:
        [songhash] = _submit_with_callback(rest_address, callback_receiver.url)
        wait_for(lambda: callback_state(rest_address, songhash).get("attempts") == 1, 90, "the first attempt")
        assert callback_state(rest_address, songhash) == {
            "state": "pending", "delivered": False, "attempts": 1, "outcome": "503",
        }
        worker.signal(signal.SIGTERM)
        assert worker.process.wait(timeout=30) == 0  # at once, whatever the backoff
    finally:
        worker.stop()
    assert callbacks(settings).counts() == {"lane:default": 0, "delayed": 1, "taken": 0, "dead": 0}

    successor = start_service("worker", settings, tmp_path / "worker-2.log")
    try:
        wait_for(lambda: callback_state(rest_address, songhash).get("state") == "delivered", 30, "the delivery")
    finally:
        successor.stop()
    assert len(callback_receiver.received) == 2
    assert len({request["headers"]["X-Event-Id"] for request in callback_receiver.received}) == 1  # one event
    assert callbacks(settings).counts() == {"lane:default": 0, "delayed": 0, "taken": 0, "dead": 0}


def test_the_callbacks_of_a_worker_that_died_mid_attempt_are_delivered_by_another(settings, tmp_path):
    """The worker is killed while its thread waits for the receiver's answer: the callback it held is reaped once
    its lease runs out, and another worker delivers it."""
    settings = replace(settings, lease_seconds=3.0, callback_timeout=15.0)
    songhash = songhash_of(SONG)
    address, server = serve(create_app(settings))
    receiver = HoldingReceiver()
    victim = start_service("worker", settings, tmp_path / "victim.log")
    try:
        _submit_with_callback(address, receiver.url)
        wait_for(receiver.holding.is_set, 90, "the victim's attempt to reach the receiver")
        victim.signal(signal.SIGKILL)
        victim.process.wait()
        assert callbacks(settings).counts()["taken"] == 1  # held by the dead worker
        heir = start_service("worker", settings, tmp_path / "heir.log")
        try:
            wait_for(lambda: callback_state(address, songhash).get("state") == "delivered", 60,
                     "the callback, reaped and delivered")
        finally:
            heir.stop()
    finally:
        victim.stop()
        receiver.close()
        server.shutdown()
    assert receiver.requests == 2 and len(receiver.event_ids) == 1


def callbacks(settings) -> ReliableQueue:
    return ReliableQueue(connect_redis(settings), f"{settings.worker_queue}:callbacks")


class HoldingReceiver:
    """Holds its first request unanswered (its client's worker dies meanwhile); answers 200 to the others."""

    def __init__(self) -> None:
        self.holding, self.requests, self.event_ids = threading.Event(), 0, set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests += 1
                receiver.event_ids.add(self.headers["X-Event-Id"])
                if receiver.requests == 1:
                    receiver.holding.set()
                    time.sleep(20)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def _submit_with_callback(rest: str, url: str) -> list[str]:
    answer = requests.post(f"http://{rest}/apiv1/separate", params={"callback_url": url}, data=SONG,
                           headers={"Content-Type": "audio/mpeg"})
    assert answer.status_code == 200, answer.text
    return [answer.json()["hash"]]
