"""An object store that restarted empty: its buckets are gone. REST and the worker make them again as soon as
a request finds them missing, and /readyz checks them each time instead of remembering that they were there."""

from __future__ import annotations

import requests
from test_faults import submit_batch

from support import Statuses, wait_for


def remove_buckets(store, *buckets: str) -> None:
    """What a store restarted empty looks like to the service: its buckets gone, behind its back."""
    for bucket in buckets:
        for item in store.client.list_objects(bucket, recursive=True):
            store.client.remove_object(bucket, item.object_name)
        store.client.remove_bucket(bucket)
        assert not store.client.bucket_exists(bucket)


def test_lost_buckets_are_made_again_by_rest_and_the_worker_and_readiness_checks_them(
    settings, rest, worker, store
):
    status = Statuses(settings)
    buckets = (settings.queue_bucket, settings.output_bucket)
    [first] = submit_batch(rest, 1, "before")  # both services have made and seen the buckets
    wait_for(lambda: status.get(first).get("state") == "done", 90, "the first song")

    remove_buckets(store, *buckets)
    [second] = submit_batch(rest, 1, "after-restart")  # asserts the upload's 200
    assert store.has_input(second)
    wait_for(lambda: status.get(second).get("state") == "done", 90, "the second song")

    # Only the output bucket lost: REST's upload does not need it, the worker's store of the tracks does.
    remove_buckets(store, settings.output_bucket)
    [third] = submit_batch(rest, 1, "output-lost")
    wait_for(lambda: status.get(third).get("state") == "done", 90, "the third song, its tracks stored")
    names = [o.object_name for o in store.client.list_objects(settings.output_bucket, prefix=third, recursive=True)]
    tracks = sorted(name.rsplit("/", 1)[1] for name in names if name.endswith(".mp3"))
    assert tracks == ["bass.mp3", "drums.mp3", "other.mp3", "vocals.mp3"], names

    remove_buckets(store, *buckets)
    ready = requests.get(f"http://{rest}/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    assert [store.client.bucket_exists(bucket) for bucket in buckets] == [True, True]
