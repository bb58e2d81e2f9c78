"""Dead letters as an operator reads them: every attempt counted, and the same letter whichever API the command
line reads it through."""

from __future__ import annotations

from msaas.claims import Claims
from msaas.cli.grpc_client import _letter, _status
from msaas.jobqueue import DeadLetter, JobQueue
from msaas.shapes import SongState, as_json
from msaas.status import SongStatus
from rpc.messages import dead_letter_message, status_message
from support import job_for


def test_a_job_that_fails_on_its_attempts_shows_each_of_them(redis_client, settings):
    """A worker's failure counts its attempt, as a lease that ran out does: one attempt, one in the letter."""
    queue = JobQueue(redis_client, settings.worker_queue, settings.demucs_model)
    status = SongStatus(redis_client, queue, f"{settings.worker_queue}:callbacks")
    Claims(redis_client, queue).submit("open", job_for("a" * 56, settings), None)
    delivery = queue.take("worker-1", 30)
    assert status.start(delivery, "worker-1").started
    assert status.fail(delivery, "demucs exited with code 1")
    [letter] = queue.dead_letters()
    assert (letter.attempts, letter.last_worker, letter.reason) == (1, "worker-1", "demucs exited with code 1")
    assert status.get(delivery.job.result.id)["attempts"] == "1"  # the status says the same

    assert status.revive(letter.id) == "revived"  # an operator's retry starts the count again
    again = queue.take("worker-2", 30)
    assert again.attempts == 0 and status.start(again, "worker-2").started
    assert status.retry(again, "the store did not answer", 0.0)  # a retry counts too
    last = queue.take("worker-2", 30)
    assert status.start(last, "worker-2").started and status.fail(last, "demucs exited with code 1")
    assert queue.dead_letter(letter.id).attempts == 2


def test_the_command_line_shows_a_grpc_letter_and_status_as_rest_answers_them():
    letter = DeadLetter("18ee7262c26488158b1fb0b73464", '{"songhash": "' + "a" * 56 + '"}', "it failed", 2,
                        "worker-1", 1796499070.901, "alice").as_json()
    assert _letter(dead_letter_message(letter)) == letter
    song = SongState("a" * 56, "failed", {"model": "demucs_unittest", "format": "mp3"}, (), attempts=2,
                     timestamps={"queued": "2026-12-05T19:31:05.417+00:00", "failed": "2026-12-05T19:31:10.901+00:00"},
                     reason="it failed")
    rest = as_json(song, lambda track: track)
    assert _status(status_message(song))["timestamps"] == rest["timestamps"]
