"""The backing services one REST app talks to, built once by `create_app`."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import current_app

from msaas.jobqueue import JobQueue
from msaas.settings import Settings
from msaas.songs import Songs
from msaas.status import SongStatus
from msaas.storage import ObjectStore
from rest.metrics import RestMetrics


@dataclass(frozen=True)
class Backends:
    settings: Settings
    redis: redis.Redis
    queue: JobQueue
    store: ObjectStore
    status: SongStatus
    songs: Songs
    metrics: RestMetrics


def backends() -> Backends:
    return current_app.extensions["msaas"]
