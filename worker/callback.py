"""Telling a job's submitter that its song is done: POST `callback.data` as JSON to `callback.url`."""

from __future__ import annotations

import logging

import requests

from msaas.jobs import Callback

log = logging.getLogger(__name__)


def notify(callback: Callback, songhash: str, event_id: str, timeout: float) -> bool:
    """Deliver the callback once; a failure is logged and reported, never raised.

    `event_id` is the same for every delivery of one job, so a receiver can drop repeats.
    """
    try:
        response = requests.post(
            callback.url,
            json=callback.data,
            headers={"X-Songhash": songhash, "X-Event-Id": event_id},
            timeout=timeout,
            allow_redirects=False,
        )
    except requests.RequestException as error:
        log.warning("song %s: callback to %s failed: %s", songhash, callback.url, error)
        return False
    if not response.ok:
        log.warning("song %s: callback to %s answered %s", songhash, callback.url, response.status_code)
        return False
    log.info("song %s: callback to %s delivered (%s)", songhash, callback.url, response.status_code)
    return True
