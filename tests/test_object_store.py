"""What a real S3 server checks and a mock would not: the keys of every request, and the signature of every
presigned link, which grants one method on one object for a while and nothing else."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import requests
from minio.error import S3Error

from conftest import S3_ACCESS_KEY, SHORT_SAMPLE, start_service, wait_for
from msaas.connections import connect_store
from msaas.naming import Result, songhash_of
from rest import create_app
from support import queued

SONG = SHORT_SAMPLE.read_bytes()
SONGHASH = songhash_of(SONG)
SETTINGS_NAMED = "S3_ACCESS_KEY or S3_SECRET_KEY is wrong"


@pytest.mark.parametrize(
    ("access_key", "secret_key", "code"),
    [("nobody", "test-secret", "InvalidAccessKeyId"), (S3_ACCESS_KEY, "not-the-secret", "SignatureDoesNotMatch")],
)
def test_wrong_keys_make_rest_unready_naming_the_settings(settings, access_key, secret_key, code):
    wrong = replace(settings, s3_access_key=access_key, s3_secret_key=secret_key)
    with pytest.raises(S3Error) as refused:  # the server itself checks every request's keys
        connect_store(wrong).list_buckets()
    assert refused.value.code == code
    client = create_app(wrong).test_client()
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json["error"] == "backend_unavailable"
    assert SETTINGS_NAMED in answer.json["message"]
    # A HEAD request has no body to carry the server's code: minio-py calls every 403 there AccessDenied.
    assert code in answer.json["message"] or "AccessDenied" in answer.json["message"]
    upload = client.post("/apiv1/separate", data=SONG, headers={"Content-Type": "audio/mpeg"})
    assert upload.status_code == 503
    assert SETTINGS_NAMED in upload.json["message"]


def test_a_worker_with_wrong_keys_says_so_and_hands_the_job_back(settings, client, redis_client, tmp_path):
    answer = client.post("/apiv1/separate", data=SONG, headers={"Content-Type": "audio/mpeg"})
    assert answer.status_code == 200
    worker = start_service("worker", settings, tmp_path / "worker.log", S3_SECRET_KEY="not-the-secret")
    try:
        def logged() -> str:
            return worker.log_path.read_text()

        wait_for(lambda: SETTINGS_NAMED in logged(), 60, "the worker's start-up check of the object store")
        job_refused = f"backend unavailable (the object store refused access to {settings.queue_bucket}/{SONGHASH}.mp3"
        wait_for(lambda: job_refused in logged(), 60, "the worker's attempt at the job")
    finally:
        worker.stop()
    # Handed back uncounted, as for an outage: fixing the keys is all the song needs.
    assert queued(settings) == 1
    status = client.get(f"/apiv1/status/{SONGHASH}").json
    assert status["state"] == "queued"
    assert SETTINGS_NAMED in status["reason"]


def test_a_presigned_link_downloads_and_grants_nothing_else(store, tmp_path):
    track = tmp_path / "vocals.mp3"
    track.write_bytes(SONG)
    store.put_output(Result(SONGHASH).attempt_key("7", "vocals", "mp3"), str(track), "mp3")
    link = store.output_link(Result(SONGHASH).attempt_key("7", "vocals", "mp3"))
    assert requests.get(link).content == SONG

    for method in ("PUT", "DELETE"):  # the signature covers the method
        refused = requests.request(method, link, data=b"not a song" if method == "PUT" else None)
        assert refused.status_code == 403, method
    address = urlsplit(link)
    query = dict(parse_qsl(address.query))
    signature = query["X-Amz-Signature"]
    query["X-Amz-Signature"] = ("0" if signature[0] != "0" else "1") + signature[1:]
    assert requests.get(address._replace(query=urlencode(query)).geturl()).status_code == 403
    assert requests.get(address._replace(query="").geturl()).status_code == 403  # no signature: anonymous
    assert requests.get(link).content == SONG  # the refused PUT and DELETE changed nothing
