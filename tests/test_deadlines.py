"""Every wait on a third party ends by a wall-clock deadline however the other side behaves: here an "object
store" that answers one header byte at a time, so that no single read ever times out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from devstack.receivers import DrippingReceiver
from msaas.connections import connect_store
from msaas.errors import BackendUnavailable
from msaas.settings import Settings
from msaas.storage import ObjectStore


@pytest.mark.parametrize("request_kind", ["upload", "download"])
def test_a_store_that_drips_its_answer_is_cut_off_at_the_deadline(tmp_path, request_kind):
    song = tmp_path / "song.mp3"
    song.write_bytes(b"\xff\xfb" * 1000)
    with DrippingReceiver(interval=0.2, limit=100) as dripping:  # 20 s of answer; the deadline is 1 s
        settings = replace(Settings(hostname="test"), s3_endpoint=f"127.0.0.1:{dripping.port}",
                           s3_access_key="key", s3_secret_key="secret")
        store = ObjectStore(connect_store(settings), "queue", "output", timeout=1.0)
        with pytest.raises(BackendUnavailable, match="took longer than 1 s"):
            if request_kind == "upload":
                store.put_input("ab" * 28, str(song))
            else:
                store.fetch_input("ab" * 28, str(tmp_path / "fetched.mp3"))
        assert dripping.finished == 0
