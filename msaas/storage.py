"""The object store: input MP3s in the queue bucket, separated tracks in the output bucket (S3 API)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import urllib3
from minio import Minio
from minio.commonconfig import ENABLED, Filter
from minio.error import MinioException, S3Error
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule

from msaas.connections import store_http
from msaas.errors import BackendUnavailable, NotFound
from msaas.jobs import FORMATS, Options, input_key, output_key, outputs_prefix, song_prefixes

CHUNK = 256 * 1024
MISSING = ("NoSuchKey", "NoSuchBucket", "NoSuchObject")
# What an S3 server answers to keys it does not know, a secret that does not match, or keys without the right.
REFUSED_KEYS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied")
DEFAULT = Options()
UPLOAD_LINK = timedelta(minutes=15)
ERROR_CODE = re.compile(rb"<Code>([^<]+)</Code>")


@dataclass
class Download:
    """An object being streamed out of the store; iterate it once, then it is closed."""

    size: int
    response: urllib3.BaseHTTPResponse

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self.response.stream(CHUNK)
        finally:
            self.response.close()
            self.response.release_conn()


def _refused(what: str, code: str) -> BackendUnavailable:
    if code in REFUSED_KEYS:  # a setting to fix, not an outage to wait out: say which
        return BackendUnavailable(
            f"the object store refused access to {what} ({code}): S3_ACCESS_KEY or S3_SECRET_KEY is wrong, "
            "or lacks the right"
        )
    return BackendUnavailable(f"object store refused {what}: {code}")


@contextmanager
def _reaching(what: str) -> Iterator[None]:
    """Turn the client's errors into the service's: a missing object, or a store that cannot be reached."""
    try:
        yield
    except S3Error as error:
        if error.code in MISSING:
            raise NotFound(f"{what} does not exist", "not_found") from None
        raise _refused(what, error.code) from error
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as error:
        raise BackendUnavailable(f"object store unreachable while handling {what}: {error}") from error


class ObjectStore:
    def __init__(
        self,
        client: Minio,
        queue_bucket: str,
        output_bucket: str,
        retention_days: int = 0,
        public_client: Minio | None = None,
    ) -> None:
        self.client = client
        self.http = store_http()  # for uploads, streamed from disk (`_put_file`)
        self.queue_bucket = queue_bucket
        self.output_bucket = output_bucket
        self.retention_days = retention_days
        self.public_client = public_client or client  # signs links for clients outside the cluster
        self._buckets_ready = False

    def ensure_buckets(self) -> None:
        """Create the buckets if missing, with the retention rule; once per process."""
        if self._buckets_ready:
            return
        for bucket in (self.queue_bucket, self.output_bucket):
            with _reaching(f"bucket {bucket}"):
                if not self.client.bucket_exists(bucket):
                    try:
                        self.client.make_bucket(bucket)
                    except S3Error as error:  # another service created it first
                        if error.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                            raise
                if self.retention_days > 0:
                    rule = Rule(
                        ENABLED,
                        rule_filter=Filter(prefix=""),
                        rule_id="retention",
                        expiration=Expiration(days=self.retention_days),
                    )
                    self.client.set_bucket_lifecycle(bucket, LifecycleConfig([rule]))
        self._buckets_ready = True

    def put_input(self, songhash: str, path: str) -> None:
        self.ensure_buckets()
        key = input_key(songhash)
        self._put_file(self.queue_bucket, key, path, "audio/mpeg")

    def has_input(self, songhash: str) -> bool:
        key = input_key(songhash)
        try:
            with _reaching(f"{self.queue_bucket}/{key}"):
                self.client.stat_object(self.queue_bucket, key)
        except NotFound:
            return False
        return True

    def remove_input(self, songhash: str) -> None:
        key = input_key(songhash)
        with _reaching(f"{self.queue_bucket}/{key}"):
            self.client.remove_object(self.queue_bucket, key)

    def fetch_input(self, songhash: str, path: str) -> None:
        key = input_key(songhash)
        with _reaching(f"{self.queue_bucket}/{key}"):
            self.client.fget_object(self.queue_bucket, key, path)

    def put_output(self, songhash: str, track: str, path: str, options: Options = DEFAULT) -> None:
        self.ensure_buckets()
        key = output_key(songhash, track, options)
        self._put_file(self.output_bucket, key, path, FORMATS[options.format])

    def _put_file(self, bucket: str, key: str, path: str, content_type: str) -> None:
        """One PUT, sent from the file as it is read. minio-py's own uploads read the file into memory in
        5 MiB parts, all of them at once when it sends parts in parallel: 16 uploads in flight in REST, or a
        long song's WAV stems in the worker, would hold hundreds of MB. A presigned URL carries the signature,
        so the body need not be hashed first; S3 takes single PUTs up to 5 GB."""
        with _reaching(f"{bucket}/{key}"), open(path, "rb") as body:
            response = self.http.request(
                "PUT",
                self.client.presigned_put_object(bucket, key, UPLOAD_LINK),
                body=body,
                headers={"Content-Type": content_type, "Content-Length": str(os.fstat(body.fileno()).st_size)},
            )
            if response.status != 200:
                code = ERROR_CODE.search(response.data)
                raise _refused(f"{bucket}/{key}", code[1].decode() if code else str(response.status))

    def open_output(self, songhash: str, track: str, options: Options = DEFAULT) -> Download:
        key = output_key(songhash, track, options)
        with _reaching(f"{self.output_bucket}/{key}"):
            response = self.client.get_object(self.output_bucket, key)
        return Download(int(response.headers.get("Content-Length", 0)), response)

    def output_link(self, songhash: str, track: str, options: Options = DEFAULT, minutes: int = 15) -> str:
        """A short-lived presigned URL to download the track straight from the store (404 if absent)."""
        key = output_key(songhash, track, options)
        with _reaching(f"{self.output_bucket}/{key}"):
            self.client.stat_object(self.output_bucket, key)
            return self.public_client.presigned_get_object(self.output_bucket, key, timedelta(minutes=minutes))

    def stored_tracks(self, songhash: str, options: Options, tracks: tuple[str, ...]) -> list[str]:
        """Which of `tracks` are stored for this result (one listing, not one request per track)."""
        wanted = {output_key(songhash, track, options): track for track in tracks}
        prefix = outputs_prefix(songhash, options)
        try:
            with _reaching(f"{self.output_bucket}/{prefix}*"):
                names = {item.object_name for item in self.client.list_objects(self.output_bucket, prefix, True)}
        except NotFound:  # no output bucket yet: nothing is stored
            return []
        return [track for key, track in wanted.items() if key in names]

    def remove_output(self, songhash: str, track: str, options: Options = DEFAULT) -> None:
        """Remove one track; NotFound if it is not there (S3 deletes answer success either way)."""
        key = output_key(songhash, track, options)
        with _reaching(f"{self.output_bucket}/{key}"):
            self.client.stat_object(self.output_bucket, key)
            self.client.remove_object(self.output_bucket, key)

    def remove_song(self, songhash: str) -> int:
        """Remove every result of a song, whatever its options, and its input; how many objects went."""
        removed = 0
        with _reaching(f"song {songhash}"):
            for prefix in song_prefixes(songhash):
                for item in self.client.list_objects(self.output_bucket, prefix, recursive=True):
                    self.client.remove_object(self.output_bucket, item.object_name)
                    removed += 1
        if self.has_input(songhash):
            self.remove_input(songhash)
            removed += 1
        return removed
