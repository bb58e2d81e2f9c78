"""Issue 20, item 5: what a request costs Redis does not grow with the queue's length or with the keyspace.

Counted, not timed (tests/redis_costs.py): every command Redis runs for one request, its scripts' own included,
and the elements they may touch, with 100, 1,000 and 10,000 songs queued, and among 0 and 300,000 other songs'
records; REST over HTTP and gRPC, against a real redis-server. The only thing allowed to differ is a queued song's
estimate, which looks at up to `eta.AHEAD` jobs ahead of it one by one, never more.
"""

from __future__ import annotations

import itertools
import time

import grpc
import pytest
import requests

from devstack import backlog
from msaas.connections import connect_redis
from msaas.eta import AHEAD
from msaas.naming import songhash_of
from msaas.records import active_key
from msaas.reliable import page
from msaas.songs import QUEUE_PAGE
from msaas.v1 import separation_pb2 as pb
from redis_costs import Cost, Monitor
from rpc_support import error_code, stub
from support import SHORT_SAMPLE, stored_result

SONG = SHORT_SAMPLE.read_bytes()
QUEUE_SIZES = (100, 1_000, 10_000)
OTHER_SONGS = 300_000
PADDING = itertools.count(1)
PAGE = 50  # the listings' pages measured: two full ones even with 100 songs queued
MAX_PAGE_BYTES = 64 * 1024  # a full page of ListQueue (100 songs) is about 20 KB; the message limit is 512 KiB


def queue_songs(settings, count: int, first: int) -> None:
    backlog.queue_songs(connect_redis(settings), settings.worker_queue, settings.demucs_model, count, first)


def other_songs(settings, count: int) -> None:
    backlog.other_songs(connect_redis(settings), count)


def submit(rest: str, **options: str) -> str:
    """A song of its own (the sample, padded with zeros as no song before it) through REST: the last one queued."""
    mp3 = SONG + b"\0" * next(PADDING)
    answer = requests.post(f"http://{rest}/apiv1/separate", data=mp3, headers={"Content-Type": "audio/mpeg"},
                           params=options)
    assert answer.status_code == 200, answer.text
    return songhash_of(mp3)


class Requests:
    """Each request measured, by name, as its cost at each size."""

    def __init__(self, monitor: Monitor, rest: str, rpc: str, queue: str) -> None:
        self.monitor = monitor
        self.queue = queue  # the worker queue's name: no request may read the whole of any of its keys
        self.rest = f"http://{rest}"
        self.grpc = stub(rpc)
        self.costs: dict[str, dict[int, Cost]] = {}

    def measure(self, name: str, size: int | None, call, *args, **kwargs) -> object:
        """Call `call(*args, **kwargs)`; unless `size` is None (a warm-up: scripts loaded, connections open), note
        its cost."""
        with self.monitor.measure() as cost:
            answer = call(*args, **kwargs)
        if size is not None:
            self.costs.setdefault(name, {})[size] = cost[0]
        return answer

    def get(self, path: str, **params) -> dict:
        answer = requests.get(self.rest + path, params=params, timeout=60)
        assert answer.status_code == 200, answer.text
        return answer.json() if answer.headers["Content-Type"].startswith("application/json") else {}

    def call(self, method: str, path: str) -> dict:
        answer = requests.request(method, self.rest + path, timeout=60)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def queued_song(self, songhash: str, size: int | None) -> None:
        """Every request about a song at the end of the queue, and the listings' pages."""
        status = self.measure("REST status", size, self.get, f"/apiv1/status/{songhash}")
        assert status["state"] == "queued"
        grpc_status = self.measure("gRPC GetStatus", size, self.grpc.GetStatus, pb.StatusRequest(songhash=songhash))
        assert grpc_status.position == status["position"]
        first = self.measure("REST queue, first page", size, self.get, "/apiv1/queue", limit=PAGE)
        assert len(first["songs"]) == PAGE and first["next"]
        later = self.measure("REST queue, a later page", size, self.get, "/apiv1/queue", limit=PAGE,
                             cursor=first["next"])
        assert len(later["songs"]) == PAGE and set(later["queue"]).isdisjoint(first["queue"])
        page = self.measure("gRPC ListQueue, first page", size, self.grpc.ListQueue, pb.ListQueueRequest(limit=PAGE))
        assert list(page.songhashes) == first["queue"]
        later_page = self.measure("gRPC ListQueue, a later page", size, self.grpc.ListQueue,
                                  pb.ListQueueRequest(limit=PAGE, cursor=page.next_cursor))
        assert list(later_page.songhashes) == later["queue"]
        self.measure("REST /metrics", size, self.get, "/metrics")

    def preview(self, size: int | None) -> None:
        """A preview submitted and its status, whatever waits in the normal lane; then cancelled, so the next is
        alone in its lane again."""
        songhash = self.measure("REST preview submitted", size, submit, self.rest.removeprefix("http://"),
                                preview="true")
        status = self.measure("REST preview status", size, self.get, f"/apiv1/status/{songhash}", preview="true")
        assert status["position"] == 1 and status["eta_seconds"] > 0
        assert self.call("POST", f"/apiv1/cancel/{songhash}")["cancelled"] == 1

    def end(self, cancelled: str, removed: str, size: int | None) -> None:
        answer = self.measure("REST cancel", size, self.call, "POST", f"/apiv1/cancel/{cancelled}")
        assert answer["cancelled"] == 1
        answer = self.measure("REST remove song", size, self.call, "DELETE", f"/apiv1/remove/{removed}")
        assert answer["cancelled"] == 1

    def check_flat(self, slack: dict[str, tuple[int, int]] | None = None) -> None:
        """Equal costs at every size, but for `slack` (name: most (commands, elements) more at the largest, and
        nothing more past the size before it); every request that breaks it is named."""
        problems = []
        for name, by_size in self.costs.items():
            sizes = sorted(by_size)
            print(f"{name}: " + ", ".join(f"{len(by_size[size].commands)} commands and {by_size[size].touched} "
                                          f"elements at {size}" for size in sizes))
            problems += [f"{name} walks the keyspace at {size}: {by_size[size]}"
                         for size in sizes if by_size[size].walks]
            problems += [f"{name} reads the whole queue at {size}: {by_size[size]}"
                         for size in sizes if by_size[size].reads_whole(self.queue)]
            smallest, largest = by_size[sizes[0]], by_size[sizes[-1]]
            more_commands, more_elements = (slack or {}).get(name, (0, 0))
            if (len(largest.commands) - len(smallest.commands) > more_commands
                    or largest.touched - smallest.touched > more_elements):
                problems.append(f"{name} grows:\n  at {sizes[0]}: {smallest}\n  at {sizes[-1]}: {largest}")
            before = by_size[sizes[-2]]
            if more_commands and (before.names != largest.names or before.touched != largest.touched):
                problems.append(f"{name} grows:\n  at {sizes[-2]}: {before}\n  at {sizes[-1]}: {largest}")
        assert not problems, "\n".join(problems)


@pytest.fixture
def monitor(settings):
    return Monitor(settings.redis_host, settings.redis_port, ignored_keys=(settings.log_list,))


def test_a_requests_cost_does_not_grow_with_the_queue(settings, rest, rpc, monitor):
    """Status (REST and gRPC) of the last song queued, the listings' first and a later page (REST and gRPC),
    a preview submitted and its status (issue 23), cancel and remove, with 100, 1,000 and 10,000 songs queued."""
    measured = Requests(monitor, rest, rpc, settings.worker_queue)
    queue_songs(settings, 2 * PAGE, 0)
    warm = submit(rest)
    measured.queued_song(warm, None)
    measured.preview(None)
    measured.end(warm, submit(rest), None)
    queued = 2 * PAGE
    for size in QUEUE_SIZES:
        queue_songs(settings, size - queued, queued)
        queued = size
        last = submit(rest)
        measured.queued_song(last, size)
        assert measured.get(f"/apiv1/status/{last}")["position"] == size + 1
        measured.preview(size)
        measured.end(last, submit(rest), size)
    # A queued song's estimate looks at the jobs ahead of it one by one, up to AHEAD of them: with 100 queued, it
    # reads the 100 ahead (a range of 100, and 100 entries), with 1,000 and 10,000 the first AHEAD (and counts the
    # workers once more, for the mean of the jobs beyond them).
    estimate = (AHEAD - QUEUE_SIZES[0] + 1, 2 * (AHEAD - QUEUE_SIZES[0]) + 1)
    measured.check_flat({"REST status": estimate, "gRPC GetStatus": estimate})


def test_a_requests_cost_does_not_grow_with_the_keyspace(settings, rest, rpc, monitor, store, tmp_path):
    """Status, cancel, remove (a queued song, and a done one with its tracks) and /metrics, among no other songs
    and among 300,000 other songs' records."""
    measured = Requests(monitor, rest, rpc, settings.worker_queue)
    track = tmp_path / "vocals.mp3"
    track.write_bytes(SONG)
    redis_client = connect_redis(settings)
    filled = 0
    for others in (None, 0, OTHER_SONGS):  # None: the warm-up
        other_songs(settings, (others or 0) - filled)
        filled = others or 0
        queued = submit(rest)
        status = measured.measure("REST status", others, measured.get, f"/apiv1/status/{queued}")
        assert status["state"] == "queued"
        measured.measure("gRPC GetStatus", others, measured.grpc.GetStatus, pb.StatusRequest(songhash=queued))
        measured.measure("REST /metrics", others, measured.get, "/metrics")
        measured.end(queued, submit(rest), others)
        cancel = pb.SongRequest(songhash=submit(rest))
        assert measured.measure("gRPC CancelSong", others, measured.grpc.CancelSong, cancel).cancelled == 1
        done = f"{next(PADDING):056x}"
        stored_result(redis_client, store, done, {"vocals": track})
        removed = measured.measure("REST remove song, done", others, measured.call, "DELETE", f"/apiv1/remove/{done}")
        assert removed["removed"] == 1
        stored_result(redis_client, store, done, {"vocals": track})
        removed = measured.measure("gRPC RemoveSong, done", others, measured.grpc.RemoveSong,
                                   pb.SongRequest(songhash=done))
        assert removed.removed == 1
    assert redis_client.dbsize() > 4 * OTHER_SONGS
    measured.check_flat()


def test_grpc_list_queue_pages_stay_small_and_the_cursor_reaches_the_last(settings, rpc):
    """10,000 songs queued: every page of ListQueue is a bounded message, and following the cursor lists each
    song once, in the order submitted, to a last page that says it is the last."""
    queue_songs(settings, QUEUE_SIZES[-1], 0)
    service = stub(rpc)
    listed: list[str] = []
    cursor, pages = "", 0
    started = time.monotonic()
    while True:
        page = service.ListQueue(pb.ListQueueRequest(cursor=cursor), timeout=60)
        pages += 1
        assert len(page.songs) <= QUEUE_PAGE and page.ByteSize() <= MAX_PAGE_BYTES, (pages, page.ByteSize())
        listed += [song.songhash for song in page.songs]
        assert [song.position for song in page.songs] == list(range(len(listed) - len(page.songs) + 1,
                                                                    len(listed) + 1))
        cursor = page.next_cursor
        if not cursor:
            break
        assert pages <= QUEUE_SIZES[-1] // QUEUE_PAGE + 1, "the cursor never reaches the last page"
    assert listed == [f"{index:056x}" for index in range(QUEUE_SIZES[-1])]
    assert pages in (QUEUE_SIZES[-1] // QUEUE_PAGE, QUEUE_SIZES[-1] // QUEUE_PAGE + 1)
    print(f"{pages} pages in {time.monotonic() - started:.1f} s")


def test_a_cursor_no_listing_gave_is_refused_on_both_apis_not_taken_for_an_outage(settings, client, rpc):
    """A cursor is the client's to send back as it got it; one it made up is its error (400, INVALID_ARGUMENT),
    never Redis refusing a NaN and the client told the service is down."""
    queue_songs(settings, 3, 0)
    for cursor in ("nan:x", "NaN:x", "inf:x", "-inf:x", "abc", ":"):
        answer = client.get("/apiv1/queue", query_string={"cursor": cursor})
        assert (answer.status_code, answer.get_json()["error"]) == (400, "invalid_cursor"), (cursor, answer.text)
        with pytest.raises(grpc.RpcError) as refused:
            stub(rpc).ListQueue(pb.ListQueueRequest(cursor=cursor))
        assert (refused.value.code(), error_code(refused.value)) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                                    "invalid_cursor"), cursor
    # A cursor of a song no longer listed (cancelled since) goes on from its place, even past songs submitted in
    # the same millisecond (the listing's order: by time, then by name).
    connection = connect_redis(settings)
    listed = connection.zrange(active_key("open"), 0, -1)
    connection.zadd(active_key("open"), dict.fromkeys(listed, 1700000000.0))
    first = client.get("/apiv1/queue", query_string={"limit": 1}).get_json()
    client.post(f"/apiv1/cancel/{first['queue'][0]}")
    assert client.get("/apiv1/queue", query_string={"cursor": first["next"]}).get_json()["queue"] == [
        backlog.songhash(1), backlog.songhash(2)]
    page = stub(rpc).ListQueue(pb.ListQueueRequest(cursor=first["next"]))
    assert list(page.songhashes) == [backlog.songhash(1), backlog.songhash(2)]


def test_a_page_after_a_member_that_left_lists_the_ties_after_it(redis_client):
    """msaas/reliable.py's `page`, under every listing: members of equal score sort by name."""
    redis_client.zadd("listing", {name: 5.0 for name in "abcde"} | {"f": 6.0})
    assert [name for name, _ in page(redis_client, "listing", (5.0, "b"), 2)] == ["c", "d"]
    redis_client.zrem("listing", "b")
    assert page(redis_client, "listing", (5.0, "b"), 3) == [("c", 5.0), ("d", 5.0), ("e", 5.0)]
    assert page(redis_client, "listing", (5.0, "bb"), 10) == [("c", 5.0), ("d", 5.0), ("e", 5.0), ("f", 6.0)]
    assert page(redis_client, "listing", (5.5, "zz"), 10) == [("f", 6.0)]
    assert redis_client.zcard("listing") == 5 and redis_client.zscore("listing", "bb") is None  # nothing left behind
