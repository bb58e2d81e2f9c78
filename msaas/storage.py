"""The object store: input MP3s in the queue bucket, separated tracks in the output bucket (S3 API)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from msaas.errors import BackendUnavailable, NotFound
from msaas.jobs import input_key, output_key

CHUNK = 256 * 1024
MISSING = ("NoSuchKey", "NoSuchBucket", "NoSuchObject")


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


@contextmanager
def _reaching(what: str) -> Iterator[None]:
    """Turn the client's errors into the service's: a missing object, or a store that cannot be reached."""
    try:
        yield
    except S3Error as error:
        if error.code in MISSING:
            raise NotFound(f"{what} does not exist", "not_found") from None
        raise BackendUnavailable(f"object store refused {what}: {error.code}") from error
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as error:
        raise BackendUnavailable(f"object store unreachable while handling {what}: {error}") from error


class ObjectStore:
    def __init__(self, client: Minio, queue_bucket: str, output_bucket: str) -> None:
        self.client = client
        self.queue_bucket = queue_bucket
        self.output_bucket = output_bucket
        self._buckets_ready = False

    def ensure_buckets(self) -> None:
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
        self._buckets_ready = True

    def put_input(self, songhash: str, mp3: bytes) -> None:
        self.ensure_buckets()
        key = input_key(songhash)
        with _reaching(f"{self.queue_bucket}/{key}"):
            self.client.put_object(self.queue_bucket, key, io.BytesIO(mp3), len(mp3), content_type="audio/mpeg")

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

    def put_output(self, songhash: str, track: str, path: str) -> None:
        self.ensure_buckets()
        key = output_key(songhash, track)
        with _reaching(f"{self.output_bucket}/{key}"):
            self.client.fput_object(self.output_bucket, key, path, content_type="audio/mpeg")

    def open_output(self, songhash: str, track: str) -> Download:
        key = output_key(songhash, track)
        with _reaching(f"{self.output_bucket}/{key}"):
            response = self.client.get_object(self.output_bucket, key)
        return Download(int(response.headers.get("Content-Length", 0)), response)

    def remove_output(self, songhash: str, track: str) -> None:
        """Remove one track; NotFound if it is not there (S3 deletes answer success either way)."""
        key = output_key(songhash, track)
        with _reaching(f"{self.output_bucket}/{key}"):
            self.client.stat_object(self.output_bucket, key)
            self.client.remove_object(self.output_bucket, key)
