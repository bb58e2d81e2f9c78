"""Callbacks leave the separation loop: a real worker process records `done`, queues the callback, and its
delivery threads deliver it, however slow the receiver; a stopping or dying worker hands its callbacks on."""

from __future__ import annotations

import signal
from dataclasses import replace

import pytest
import requests
from test_faults import SONG, submit_batch, variant

from devstack.receivers import DrippingReceiver
from msaas.connections import connect_redis
from msaas.naming import songhash_of
from rest import create_app
from support import serve, start_service, wait_for

CALLBACKS = "toWorker:callbacks"


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


def test_sigterm_hands_back_an_undelivered_callback_and_another_worker_delivers_it(
    settings, rest_address, callback_receiver, tmp_path
):
    # The first attempt fails; the retry is a minute away when the worker is told to stop.
    settings = replace(settings, callback_attempts=3, callback_backoff=60.0)
    callback_receiver.statuses = [503]
    connection = connect_redis(settings)
    worker = start_service("worker", settings, tmp_path / "worker-1.log")
    try:
        [songhash] = _submit_with_callback(rest_address, callback_receiver.url)
        wait_for(lambda: callback_state(rest_address, songhash).get("attempts") == 1, 90, "the first attempt")
        assert callback_state(rest_address, songhash) == {
            "state": "pending", "delivered": False, "attempts": 1, "outcome": "503",
        }
        worker.signal(signal.SIGTERM)
        assert worker.process.wait(timeout=30) == 0  # not the minute of backoff
    finally:
        worker.stop()
    assert connection.llen(CALLBACKS) == 1
    assert connection.keys(f"{CALLBACKS}:processing:*") == []

    successor = start_service("worker", settings, tmp_path / "worker-2.log")
    try:
        wait_for(lambda: callback_state(rest_address, songhash).get("state") == "delivered", 30, "the delivery")
    finally:
        successor.stop()
    assert len(callback_receiver.received) == 2
    assert len({request["headers"]["X-Event-Id"] for request in callback_receiver.received}) == 1  # one event
    assert connection.llen(CALLBACKS) == 0


def test_the_callbacks_of_a_worker_that_died_are_delivered_by_another(settings, callback_receiver, tmp_path):
    settings = replace(settings, lease_seconds=3.0, callback_attempts=3, callback_backoff=60.0)
    callback_receiver.statuses = [503]
    connection = connect_redis(settings)
    songhash = songhash_of(SONG)
    address, server = serve(create_app(settings))
    victim = start_service("worker", settings, tmp_path / "victim.log")
    try:
        _submit_with_callback(address, callback_receiver.url)
        wait_for(lambda: callback_state(address, songhash).get("attempts") == 1, 90, "the first attempt")
        victim.signal(signal.SIGKILL)
        victim.process.wait()
        [held] = connection.keys(f"{CALLBACKS}:processing:test-{victim.process.pid}-*")  # name: host-pid-random
        assert connection.llen(held) == 1
        heir = start_service("worker", settings, tmp_path / "heir.log")
        try:
            wait_for(lambda: callback_state(address, songhash).get("state") == "delivered", 60,
                     "the callback, reaped and delivered")
        finally:
            heir.stop()
    finally:
        victim.stop()
        server.shutdown()
    assert len(callback_receiver.received) == 2
    assert len({request["headers"]["X-Event-Id"] for request in callback_receiver.received}) == 1


def _submit_with_callback(rest: str, url: str) -> list[str]:
    answer = requests.post(f"http://{rest}/apiv1/separate", params={"callback_url": url}, data=SONG,
                           headers={"Content-Type": "audio/mpeg"})
    assert answer.status_code == 200, answer.text
    return [answer.json()["hash"]]
