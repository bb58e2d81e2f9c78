"""The backing services and the objects over them that both APIs use, built once per process from Settings."""

from __future__ import annotations

from dataclasses import dataclass, replace

import redis

from msaas.access import Access
from msaas.claims import Claims
from msaas.connections import connect_api_redis, connect_store
from msaas.errors import BadRequest, Conflict, NotFound
from msaas.eta import Estimates
from msaas.jobqueue import DeadLetter, JobQueue
from msaas.settings import Settings
from msaas.songs import Policy, Songs
from msaas.status import SongStatus
from msaas.storage import ObjectStore
from msaas.tenants import Tenants


@dataclass(frozen=True)
class Services:
    settings: Settings
    redis: redis.Redis
    queue: JobQueue
    store: ObjectStore
    claims: Claims
    songs: Songs
    tenants: Tenants
    access: Access
    admin: Admin


def build(settings: Settings, how_to_send_a_key: str) -> Services:
    """Everything an API needs; `how_to_send_a_key` words the refusal of a request without a key."""
    connection = connect_api_redis(settings)
    public_store = None
    if settings.s3_public_endpoint:  # presigned links must name the host clients reach, not the in-cluster one
        public_store = connect_store(replace(settings, s3_endpoint=settings.s3_public_endpoint))
    queue = JobQueue(connection, settings.worker_queue, settings.demucs_model)
    store = ObjectStore(
        connect_store(settings), settings.queue_bucket, settings.output_bucket, settings.retention_days, public_store,
        settings.store_timeout,
    )
    tenants = Tenants(settings.tenants_file, settings.api_keys, settings.admin_keys)
    claims = Claims(connection, queue)
    policy = Policy(settings.demucs_model, settings.max_song_seconds, settings.callback_allow_hosts)
    status = SongStatus(connection, queue, f"{settings.worker_queue}:callbacks")
    access = Access(connection, tenants, settings.rate_limit_per_minute, how_to_send_a_key)
    estimates = Estimates(connection, queue, settings.lease_seconds, settings.demucs_model)
    return Services(settings, connection, queue, store, claims, Songs(queue, store, claims, policy, estimates),
                    tenants, access, Admin(queue, status, claims, tenants))


class Admin:
    """What an admin key may do: the dead letters, and every tenant's usage."""

    def __init__(self, queue: JobQueue, status: SongStatus, claims: Claims, tenants: Tenants) -> None:
        self.queue = queue
        self.status = status
        self.claims = claims
        self.tenants = tenants

    def dead_letters(self, cursor: str | None, limit: int) -> tuple[list[DeadLetter], str | None]:
        after = None
        if cursor:
            at, _, entry_id = cursor.partition(":")
            if not at.isdigit() or not entry_id:
                raise BadRequest(f"cursor {cursor[:80]!r} is not one a listing gave", "invalid_cursor")
            after = (float(at), entry_id)
        limit = max(1, min(limit, 100))
        letters = self.queue.dead_letters(after, limit)
        more = len(letters) == limit
        return letters, f"{letters[-1].buried_at * 1000:.0f}:{letters[-1].id}" if more else None

    def dead_letter(self, entry_id: str) -> DeadLetter:
        letter = self.queue.dead_letter(entry_id)
        if letter is None:
            raise NotFound(f"there is no dead letter {entry_id!r}", "dead_letter_not_found")
        return letter

    def retry(self, entry_id: str) -> None:
        outcome = self.status.revive(entry_id)
        if outcome == "missing":
            raise NotFound(f"there is no dead letter {entry_id!r}", "dead_letter_not_found")
        if outcome == "conflict":
            raise Conflict(f"the song of dead letter {entry_id} was queued or separated again since; purge the letter",
                           "dead_letter_superseded")

    def purge(self, entry_id: str | None) -> int:
        """Forget one dead letter, or all of them (`entry_id` None); how many went."""
        if entry_id is not None:
            if not self.queue.purge(entry_id):
                raise NotFound(f"there is no dead letter {entry_id!r}", "dead_letter_not_found")
            return 1
        purged = 0
        while letters := self.queue.dead_letters(None, 100):
            purged += sum(self.queue.purge(letter.id) for letter in letters)
        return purged

    def usage(self) -> dict[str, dict[str, float]]:
        """Every configured tenant's usage (and the open tenant's)."""
        names = [*self.tenants.current().names, "open"]
        return {name: self.claims.usage(name) for name in dict.fromkeys(names)}
