"""A step Redis ran whose answer never came back (the connection reset after the command went out: a failover, a
proxy or a network blip): the caller cannot tell it from a step that never ran, and must not act as if it had not.
Real worker, real Redis and S3; a TCP proxy in front of Redis cuts the one connection that carried the step."""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
import threading
import time
from dataclasses import replace

import pytest
import requests

from msaas.claims import SUBMIT
from msaas.models import FOUR_STEMS
from msaas.naming import songhash_of
from msaas.status import PUBLISH
from rest import create_app
from support import SHORT_SAMPLE, Statuses, TcpProxy, queued, serve, start_service, wait_for

pytestmark = pytest.mark.demucs
SONG = SHORT_SAMPLE.read_bytes()
SONGHASH = songhash_of(SONG)
FINISHED = ("tracks published", "its own files removed", "backend unavailable")  # how an attempt's log ends


class CuttingProxy(TcpProxy):
    """A TCP proxy in front of Redis that passes everything, except that the first `cuts` commands carrying `trigger`
    are delivered and then their connection is reset before the answer can come back."""

    def __init__(self, target_port: int, trigger: bytes, cuts: int) -> None:
        self.trigger, self.cuts, self.cut = trigger, cuts, threading.Event()
        super().__init__(target_port)

    def relay(self, client: socket.socket, upstream: socket.socket) -> None:
        severed = threading.Event()  # this connection's answers are no longer passed on
        threading.Thread(target=self.requests, args=(client, upstream, severed), daemon=True).start()
        threading.Thread(target=self.answers, args=(upstream, client, severed), daemon=True).start()

    def requests(self, client: socket.socket, upstream: socket.socket, severed: threading.Event) -> None:
        seen = b""
        try:
            while data := client.recv(65536):
                seen = seen[-len(self.trigger):] + data
                if self.cuts > 0 and self.trigger in seen:
                    self.cuts -= 1
                    self.cut.set()
                    severed.set()
                    upstream.sendall(data)
                    time.sleep(0.5)  # Redis runs it; its answer is dropped
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    client.close()  # a reset, as a failover or a dropped route gives
                    upstream.close()
                    return
                upstream.sendall(data)
        except OSError:
            pass

    def answers(self, upstream: socket.socket, client: socket.socket, severed: threading.Event) -> None:
        try:
            while data := upstream.recv(65536):
                if not severed.is_set():
                    client.sendall(data)
        except OSError:
            pass


@pytest.mark.parametrize("cuts", [1, 100], ids=["once, retried", "every try"])
def test_a_publish_whose_answer_was_lost_keeps_its_tracks(settings, redis_client, redis_server, tmp_path, cuts):
    """Redis marks the song done with this attempt's tracks and the answer is lost: the worker's client sends the
    step again (and hears that the job is no longer held, the step having run), or gives up on Redis. Either way the
    tracks it published must still be there."""
    publish_sha = hashlib.sha1(PUBLISH.encode()).hexdigest()
    redis_client.script_load(PUBLISH)  # so the worker's first EVALSHA runs the step (no NOSCRIPT round first)
    proxy = CuttingProxy(redis_server.port, publish_sha.encode(), cuts)
    rest, server = serve(create_app(settings))
    worker = start_service("worker", settings, tmp_path / "worker.log", REDIS_PORT=str(proxy.port))
    try:
        answer = requests.post(f"http://{rest}/apiv1/separate", json={"mp3": base64.b64encode(SONG).decode()})
        assert answer.status_code == 200
        wait_for(proxy.cut.is_set, 180, "the worker to publish")
        wait_for(lambda: _status(rest)["state"] == "done", 60, "the song to be done")
        log = tmp_path / "worker.log"
        wait_for(lambda: any(end in log.read_text() for end in FINISHED), 60, "the worker to be done with the job")
        time.sleep(1)  # whatever the worker still does for this attempt, it does now
        served = {track: requests.get(f"http://{rest}/apiv1/track/{SONGHASH}/{track}.mp3").status_code
                  for track in FOUR_STEMS}
    finally:
        worker.stop()
        proxy.close()
        server.shutdown()
    assert served == dict.fromkeys(FOUR_STEMS, 200), (served, log.read_text()[-3000:])


def _status(rest: str) -> dict:
    return requests.get(f"http://{rest}/apiv1/status/{SONGHASH}").json()


def test_a_submission_whose_answer_was_lost_keeps_the_song_its_job_needs(settings, redis_client, redis_server, store):
    """Redis queues the job and the answer is lost: REST answers 503 (it cannot tell), but must not remove the MP3
    the queued job will fetch."""
    redis_client.script_load(SUBMIT)
    proxy = CuttingProxy(redis_server.port, hashlib.sha1(SUBMIT.encode()).hexdigest().encode(), 1)
    client = create_app(replace(settings, redis_port=proxy.port)).test_client()
    try:
        answer = client.post("/apiv1/separate", data=SONG, content_type="audio/mpeg")
    finally:
        proxy.close()
    assert proxy.cut.is_set() and answer.status_code == 503
    assert Statuses(settings).get(SONGHASH)["state"] == "queued" and queued(settings) == 1
    assert store.has_input(SONGHASH)
