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
from msaas.deadline import Deadline
from msaas.errors import BackendUnavailable, NotFound, local_resource_error
from msaas.naming import FORMATS, input_key

CHUNK = 256 * 1024
MISSING = ("NoSuchKey", "NoSuchBucket", "NoSuchObject")
# What an S3 server answers to keys it does not know, a secret that does not match, or keys without the right.
REFUSED_KEYS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied")
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
def _translating(what: str) -> Iterator[None]:
    """Turn the client's errors into the service's: a missing object, or a store that cannot be reached.
    A local file's error (a full disk, say) is no outage of the store: it goes on as it is, for the caller,
    who knows which scratch space it was, to name (`msaas.errors.local_resources`)."""
    try:
        yield
    except S3Error as error:
        if error.code in MISSING:
            raise NotFound(f"{what} does not exist", "not_found") from None
        raise _refused(what, error.code) from error
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as error:
        if local_resource_error(error) is not None:
            raise
        raise BackendUnavailable(f"object store unreachable while handling {what}: {error}") from error


class ObjectStore:
    def __init__(
        self,
        client: Minio,
        queue_bucket: str,
        output_bucket: str,
        retention_days: int = 0,
        public_client: Minio | None = None,
        timeout: float = 300.0,
    ) -> None:
        self.client = client
        self.http = store_http()  # for uploads, streamed from disk (`_put_file`)
        self.queue_bucket = queue_bucket
        self.output_bucket = output_bucket
        self.retention_days = retention_days
        self.public_client = public_client or client  # signs links for clients outside the cluster
        self.timeout = timeout  # wall-clock seconds each request (an upload or download whole) may take
        self._buckets_ready = False

    @contextmanager
    def _reaching(self, what: str) -> Iterator[None]:
        """One request to the store: its errors translated, and cut short past the deadline however the store
        trickles its answer."""
        with _translating(what), Deadline(self.timeout, f"object store request for {what}").enforced():
            yield

    def ensure_buckets(self, recheck: bool = False) -> None:
        """Create the buckets if missing, with the retention rule. Once per process, unless `recheck`: the
        store may have lost them since (restarted empty), and readiness and a refused upload ask again."""
        if self._buckets_ready and not recheck:
            return
        for bucket in (self.queue_bucket, self.output_bucket):
            with self._reaching(f"bucket {bucket}"):
                created = self._make_bucket(bucket)
                if self.retention_days > 0 and (created or not self._buckets_ready):
                    rule = Rule(
                        ENABLED,
                        rule_filter=Filter(prefix=""),
                        rule_id="retention",
                        expiration=Expiration(days=self.retention_days),
                    )
                    self.client.set_bucket_lifecycle(bucket, LifecycleConfig([rule]))
        self._buckets_ready = True

    def _make_bucket(self, bucket: str) -> bool:
        """Create `bucket` unless it exists; whether this call created it."""
        if self.client.bucket_exists(bucket):
            return False
        try:
            self.client.make_bucket(bucket)
        except S3Error as error:  # another service created it first
            if error.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
            return False
        return True

    def put_input(self, songhash: str, path: str) -> None:
        self.ensure_buckets()
        key = input_key(songhash)
        self._put_file(self.queue_bucket, key, path, "audio/mpeg")

    def has_input(self, songhash: str) -> bool:
        key = input_key(songhash)
        try:
            with self._reaching(f"{self.queue_bucket}/{key}"):
                self.client.stat_object(self.queue_bucket, key)
        except NotFound:
            return False
        return True

    def remove_input(self, songhash: str) -> None:
        key = input_key(songhash)
        with self._reaching(f"{self.queue_bucket}/{key}"):
            self.client.remove_object(self.queue_bucket, key)

    def fetch_input(self, songhash: str, path: str) -> None:
        key = input_key(songhash)
        with self._reaching(f"{self.queue_bucket}/{key}"):
            self.client.fget_object(self.queue_bucket, key, path)

    def put_output(self, key: str, path: str, extension: str, content_type: str | None = None) -> None:
        self.ensure_buckets()
        self._put_file(self.output_bucket, key, path, content_type or FORMATS[extension])

    def _put_file(self, bucket: str, key: str, path: str, content_type: str) -> None:
        """One PUT, sent from the file as it is read. minio-py's own uploads read the file into memory in
        5 MiB parts, all of them at once when it sends parts in parallel: 16 uploads in flight in REST, or a
        long song's WAV stems in the worker, would hold hundreds of MB. A presigned URL carries the signature,
        so the body need not be hashed first; S3 takes single PUTs up to 5 GB."""
        refusal = self._put_once(bucket, key, path, content_type)
        if refusal == "NoSuchBucket":  # the store lost its buckets (restarted empty): make them again, once
            self.ensure_buckets(recheck=True)
            refusal = self._put_once(bucket, key, path, content_type)
        if refusal:
            raise _refused(f"{bucket}/{key}", refusal)

    def _put_once(self, bucket: str, key: str, path: str, content_type: str) -> str:
        """One PUT of the file; "" when stored, else the store's error code (or the HTTP status)."""
        with self._reaching(f"{bucket}/{key}"), open(path, "rb") as body:
            response = self.http.request(
                "PUT",
                self.client.presigned_put_object(bucket, key, UPLOAD_LINK),
                body=body,
                headers={"Content-Type": content_type, "Content-Length": str(os.fstat(body.fileno()).st_size)},
            )
            if response.status == 200:
                return ""
            code = ERROR_CODE.search(response.data)
            return code[1].decode() if code else str(response.status)

    def open_output(self, key: str) -> Download:
        with self._reaching(f"{self.output_bucket}/{key}"):
            response = self.client.get_object(self.output_bucket, key)
        return Download(int(response.headers.get("Content-Length", 0)), response)

    def output_size(self, key: str) -> int | None:
        """An output's size in bytes; None if it is not stored."""
        try:
            with self._reaching(f"{self.output_bucket}/{key}"):
                return self.client.stat_object(self.output_bucket, key).size
        except NotFound:
            return None

    def reader_link(self, key: str, minutes: int) -> str:
        """A presigned URL at the store's own address, for a process of this service to read an output (ffmpeg
        rendering a mix, msaas/mixes.py); unchecked."""
        with self._reaching(f"{self.output_bucket}/{key}"):
            return self.client.presigned_get_object(self.output_bucket, key, timedelta(minutes=minutes))

    def output_link(self, key: str, minutes: int = 15) -> str:
        """A short-lived presigned URL to download an output straight from the store (NotFound if absent)."""
        with self._reaching(f"{self.output_bucket}/{key}"):
            self.client.stat_object(self.output_bucket, key)
            return self.public_client.presigned_get_object(self.output_bucket, key, timedelta(minutes=minutes))

    def remove_output(self, key: str) -> None:
        """Remove one output; NotFound if it is not there (S3 deletes answer success either way)."""
        with self._reaching(f"{self.output_bucket}/{key}"):
            self.client.stat_object(self.output_bucket, key)
            self.client.remove_object(self.output_bucket, key)

    def remove_outputs(self, keys: list[str]) -> None:
        """Remove whichever of `keys` are stored (an attempt's own files)."""
        with self._reaching(f"{self.output_bucket}/{len(keys)} keys"):
            for key in keys:
                self.client.remove_object(self.output_bucket, key)

    def remove_prefix(self, prefix: str) -> int:
        """Remove every output under `prefix`; how many went."""
        removed = 0
        with self._reaching(f"{self.output_bucket}/{prefix}*"):
            for item in self.client.list_objects(self.output_bucket, prefix, recursive=True):
                self.client.remove_object(self.output_bucket, item.object_name)
                removed += 1
        return removed
