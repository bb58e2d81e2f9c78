"""Every wait on a third party ends by a wall-clock deadline however the other side behaves: an "object store"
that answers one header byte at a time, so that no single read ever times out, and a call that hangs."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from devstack.receivers import DrippingReceiver
from msaas.connections import connect_store
from msaas.deadline import Deadline, DeadlineExceeded
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


def test_a_call_nothing_can_interrupt_is_waited_for_only_until_the_deadline():
    with pytest.raises(DeadlineExceeded, match="lookup took longer than 0.2 s"):
        Deadline(0.2, "lookup").wait_for(threading.Event().wait, 30)  # a name lookup that hangs
    assert Deadline(5, "lookup").wait_for(divmod, 7, 2) == (3, 1)
    with pytest.raises(ZeroDivisionError):
        Deadline(5, "lookup").wait_for(divmod, 7, 0)
