"""Issue 20, item 1: a worker that wakes after its lease ran out (a frozen VM, a paused container) changes nothing,
and an attempt cut off mid-upload serves nothing. Real workers, real Redis and S3, real signals."""

from __future__ import annotations

import base64
import signal
import socket
import threading
import time
from dataclasses import replace

import pytest
import requests

from msaas.models import FOUR_STEMS
from msaas.naming import songhash_of
from support import SHORT_SAMPLE, TcpProxy, serve, start_service, wait_for

pytestmark = pytest.mark.demucs
SONG = SHORT_SAMPLE.read_bytes()
SONGHASH = songhash_of(SONG)
LEASE = 2.0
SLOW = {"shifts": 6}  # the tiny model's 8 s made long enough to pause a worker in the middle of it


def status(rest: str) -> dict:
    return requests.get(f"http://{rest}/apiv1/status/{SONGHASH}", params=SLOW).json()


def tracks(rest: str) -> dict[str, int | bytes]:
    """Each track as served: its bytes, or the status code when it is not served."""
    served = {}
    for track in FOUR_STEMS:
        answer = requests.get(f"http://{rest}/apiv1/track/{SONGHASH}/{track}.mp3", params=SLOW)
        served[track] = answer.content if answer.ok else answer.status_code
    return served


class Watcher(threading.Thread):
    """Samples the status and the tracks until stopped: what a client polling them would have seen."""

    def __init__(self, rest: str) -> None:
        super().__init__(daemon=True)
        self.rest, self.seen, self.stop = rest, [], threading.Event()
        self.start()

    def run(self) -> None:
        while not self.stop.is_set():
            # The tracks first, then the status: a track served before the status was read must have been published
            # by then (the other order races with a publish that lands between the two reads).
            served = {track: data for track, data in tracks(self.rest).items() if not isinstance(data, int)}
            state = status(self.rest)
            self.seen.append((state.get("state"), state.get("worker"), state.get("progress"), set(served)))
            time.sleep(0.1)

    def finish(self) -> list:
        self.stop.set()
        self.join()
        return self.seen


@pytest.mark.parametrize("wake", ["after the other finished", "while the other runs"])
def test_a_worker_paused_past_its_lease_changes_nothing_when_it_wakes(settings, store, tmp_path, callback_receiver,
                                                                       wake):
    settings = replace(settings, lease_seconds=LEASE)
    rest, server = serve_rest(settings)
    paused = start_service("worker", settings, tmp_path / "paused.log")
    other = None
    watcher = Watcher(rest)
    try:
        answer = requests.post(f"http://{rest}/apiv1/separate", json={
            "mp3": base64.b64encode(SONG).decode(), "callback": {"url": callback_receiver.url}, **SLOW})
        assert answer.status_code == 200
        wait_for(lambda: status(rest)["state"] == "processing", 120, "the first worker to be mid-separation")
        first_worker = status(rest)["worker"]
        paused.signal(signal.SIGSTOP)  # its heartbeat stops: the lease runs out, another worker takes the job
        other = start_service("worker", settings, tmp_path / "other.log")
        wait_for(lambda: status(rest).get("worker") not in (None, "", first_worker), 60, "the second worker")
        if wake == "after the other finished":
            wait_for(lambda: status(rest)["state"] == "done", 240, "the second worker to finish")
            done = tracks(rest)
            paused.signal(signal.SIGCONT)
        else:
            time.sleep(1)
            paused.signal(signal.SIGCONT)
            wait_for(lambda: status(rest)["state"] == "done", 240, "the second worker to finish")
            done = tracks(rest)
        wait_for(lambda: "no longer this worker's" in (tmp_path / "paused.log").read_text(), 60,
                 "the woken worker to find its job gone")
        time.sleep(2)  # whatever the woken worker still does, it does now
        seen = watcher.finish()
        final, served = status(rest), tracks(rest)
    finally:
        watcher.stop.set()
        paused.signal(signal.SIGCONT)
        paused.stop()
        if other is not None:
            other.stop()
        server.shutdown()
    assert final["state"] == "done"
    assert served == done and all(isinstance(data, bytes) for data in done.values())
    assert len(callback_receiver.received) == 1
    # Only the published attempt's files remain: the woken attempt removed its own, and nothing else.
    names = {item.object_name for item in store.client.list_objects(settings.output_bucket, recursive=True)}
    assert {name.rsplit("/", 1)[0] for name in names} == {f"{SONGHASH}/{final_prefix(settings)}"}
    # What a polling client saw: no track before "done", and once the second worker had the song, its progress
    # only grew (the woken worker's stale writes never showed).
    assert all(not served for state, _, _, served in seen if state != "done")
    second = [progress for state, worker, progress, _ in seen if state == "processing" and worker != first_worker]
    assert second == sorted(second)


def final_prefix(settings) -> str:
    """The prefix of the published attempt's tracks, as the status names it."""
    from msaas.connections import connect_redis
    from msaas.options import Options

    result = Options.resolve(SLOW, settings.demucs_model).result(SONGHASH, settings.demucs_model)
    published = connect_redis(settings).hget(f"status:{result.id}", "published")
    return f"{result.tag}/{published}"


def serve_rest(settings):
    from rest import create_app

    return serve(create_app(settings))


class FreezingProxy(TcpProxy):
    """A TCP proxy in front of the S3 server that lets the first `passes` uploads to the output bucket through, then
    holds every byte after it (a store that stops answering mid-upload)."""

    def __init__(self, target_port: int, passes: int) -> None:
        self.passes, self.frozen = passes, threading.Event()
        super().__init__(target_port)

    def relay(self, client: socket.socket, upstream: socket.socket) -> None:
        threading.Thread(target=self.pipe, args=(client, upstream, True), daemon=True).start()
        threading.Thread(target=self.pipe, args=(upstream, client, False), daemon=True).start()

    def pipe(self, source: socket.socket, sink: socket.socket, outgoing: bool) -> None:
        try:
            while data := source.recv(65536):
                if outgoing and b"PUT /output/" in data:
                    self.passes -= data.count(b"PUT /output/")
                    if self.passes < 0:
                        self.frozen.set()
                while self.frozen.is_set():
                    time.sleep(0.1)  # held: the client's deadline ends its wait
                sink.sendall(data)
        except OSError:
            pass


def test_an_attempt_cut_off_mid_upload_serves_nothing(settings, s3_server, tmp_path):
    """The store stops answering after the first track is uploaded: that track must not be served while the song
    is not done, and the job, handed back, is done later with all four."""
    settings = replace(settings, lease_seconds=LEASE)
    rest, server = serve_rest(settings)
    proxy = FreezingProxy(s3_server.port, passes=1)
    worker = start_service("worker", settings, tmp_path / "worker.log", S3_ENDPOINT=f"127.0.0.1:{proxy.port}",
                           STORE_TIMEOUT="3")
    watcher = Watcher(rest)
    try:
        requests.post(f"http://{rest}/apiv1/separate", json={"mp3": base64.b64encode(SONG).decode(), **SLOW})
        wait_for(proxy.frozen.is_set, 180, "the store to freeze mid-upload")
        wait_for(lambda: "handed back" in status(rest).get("reason", ""), 60, "the attempt to be handed back")
        assert all(isinstance(data, int) for data in tracks(rest).values())  # the uploaded track is not served
        proxy.frozen.clear()
        proxy.passes = 100
        wait_for(lambda: status(rest)["state"] == "done", 240, "the song, done by a later attempt")
        seen = watcher.finish()
        served = tracks(rest)
    finally:
        watcher.stop.set()
        proxy.frozen.clear()
        worker.stop()
        proxy.close()
        server.shutdown()
    assert all(isinstance(data, bytes) for data in served.values())
    assert all(not served for state, _, _, served in seen if state != "done")
