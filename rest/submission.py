"""Accepting a song for separation: answer from an existing result, or store the MP3 and queue one job."""

from __future__ import annotations

import logging

import redis

from msaas.errors import BackendUnavailable
from msaas.jobs import Callback, Job, Options, result_id
from msaas.mp3 import check_mp3
from msaas.status import ACTIVE, DONE
from rest.backends import Backends
from rest.uploads import Upload

log = logging.getLogger(__name__)
ENQUEUED = "Song enqueued for separation"  # the reference's words; clients may compare them


def submit(services: Backends, upload: Upload, options: Options, callback: Callback | None) -> str:
    """Queue the song unless its result exists or is on its way; return the `reason` for the client."""
    settings = services.settings
    songhash = upload.songhash
    services.metrics.upload_bytes.observe(upload.size)
    result = result_id(songhash, options)
    state = services.status.get(result).get("state")
    # "done" is trusted without asking the store: it expires before the tracks do (worker/loop.py), and
    # removing a track, or finding one missing, drops it (rest/api.py).
    if state == DONE:
        return "Song already separated with these options; its tracks are ready (nothing queued)"
    if state in ACTIVE:
        return f"Song already {state} with these options; not queued again"
    # Only songs that will be queued are checked: a repeat of a finished song answers at once.
    check_mp3(upload.path, settings.max_song_seconds)

    job = Job.of(songhash, options, callback)
    already_stored = services.store.has_input(songhash)
    if not already_stored:
        services.store.put_input(songhash, upload.path)
    try:
        state = services.status.enqueue_once(services.queue, job, result)
    except redis.RedisError as error:
        # Never leave an MP3 behind that no job will ever pick up.
        if not already_stored:
            services.store.remove_input(songhash)
        raise BackendUnavailable(f"the job queue (Redis) is unreachable; nothing was queued: {error}") from None
    if state is not None:
        return f"Song already {state} with these options; not queued again"
    log.info("song %s enqueued (%s, callback %s)", songhash, options.tag if options.model else "defaults",
             bool(callback))
    services.metrics.jobs_enqueued.inc()
    return ENQUEUED

