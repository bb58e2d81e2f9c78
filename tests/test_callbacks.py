"""Webhooks: the SSRF guard, signatures, and delivery with retries, against real HTTP servers on loopback."""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from devstack.receivers import DrippingReceiver
from msaas.callbacks import CallbackRefused, address_kind, check_callback_url, sign, verify
from msaas.claims import Claims
from msaas.connections import connect_redis
from msaas.errors import BadRequest
from msaas.jobqueue import JobQueue
from msaas.jobs import Callback
from msaas.reliable import ReliableQueue
from msaas.settings import Settings
from support import wait_for
from worker.callbacks import CallbackSender, Due, Outcome, deliver
from worker.metrics import WorkerMetrics
from worker.policies import Retry

SONGHASH = "5d" * 28
EVENT_ID = "6f1c2a9e0b4d4f8e9a7b3c2d1e0f9a8b"
DATA = {"mp3": "short-hum", "n": 1}

# The signature test vector, also printed in docs/api.md ("Verifying a signature").
VECTOR_SECRET = "whsec_msaas_test"
VECTOR_TIMESTAMP = 1700000000
VECTOR_BODY = b'{"mp3": "short-hum", "n": 1}'
VECTOR_SIGNATURE = "d2d0dcab701280d958189ca8f0d52449b648a299520660287a2b7bffe6091578"


@dataclass
class Request:
    path: str
    headers: Message
    body: bytes


class Receiver(ThreadingHTTPServer):
    """A callback receiver on a loopback address: answers with `statuses` in turn (then 200), records every
    request, and counts every connection it accepts, so a test can tell that nothing reached it."""

    daemon_threads = True

    def __init__(self, statuses=(), host="127.0.0.1", delay=0.0, location="", tls: ssl.SSLContext | None = None):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.statuses = list(statuses)
        self.delay = delay  # seconds to wait before answering (a receiver slower than the timeout)
        self.location = location  # where a 3xx answer points
        self.requests: list[Request] = []
        self.times: list[float] = []  # when each request arrived (monotonic)
        self.connections = 0
        self.released = threading.Event()
        super().__init__((host, 0), ReceiverHandler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}/hook?song=1"

    def get_request(self):
        accepted = super().get_request()
        self.connections += 1
        return accepted

    def handle_error(self, request, client_address) -> None:
        pass  # a client that timed out and left: the tests look at what arrived, not at broken pipes

    def close(self) -> None:
        self.released.set()
        self.shutdown()
        self.server_close()


class ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests.append(Request(self.path, self.headers, body))
        self.server.times.append(time.monotonic())
        if self.server.delay:
            self.server.released.wait(self.server.delay)
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.send_response(status)
        if 300 <= status < 400:
            self.send_header("Location", self.server.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receivers():
    """Make receivers with `receivers(statuses=..., ...)`; all are closed after the test."""
    made: list[Receiver] = []

    def make(**options) -> Receiver:
        made.append(Receiver(**options))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def callback_settings(**changes) -> Settings:
    """The defaults (4 attempts, 1 s backoff, 10 s timeout) unless a test says otherwise."""
    return replace(Settings(hostname="test"), **changes)


def attempt(url: str, settings: Settings) -> Outcome:
    """One delivery attempt of a song's callback to `url`."""
    return deliver(Due("result", SONGHASH, EVENT_ID, "open", Callback(url, DATA)), settings)


def quiet_period(receiver: Receiver, seconds: float = 0.3) -> int:
    """Connections the receiver has accepted, after giving a stray one time to arrive."""
    time.sleep(seconds)
    return receiver.connections


# --- the address rules -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.8.9.10", "a loopback address"),
        ("::1", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("172.31.255.254", "a private address"),
        ("192.168.1.1", "a private address"),
        ("169.254.169.254", "a link-local address"),  # the cloud metadata service
        ("fe80::1", "a link-local address"),
        ("fc00::1", "a unique-local address"),
        ("fd12:3456::1", "a unique-local address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("::ffff:10.0.0.1", "a private address"),
        ("::ffff:169.254.169.254", "a link-local address"),
        ("2002:a00:1::1", "a private address"),  # 6to4 around 10.0.0.1
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("100.64.0.1", "a carrier-grade NAT address"),
        ("224.0.0.1", "a multicast address"),
        ("ff0e::1", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("::7f00:1", "a reserved address"),  # IPv4-compatible ::127.0.0.1
    ],
)
def test_non_public_addresses_are_refused(address, kind):
    assert address_kind(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:93.184.216.34"])
def test_public_addresses_are_allowed(address):
    assert address_kind(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/hook", "127.0.0.1 is a loopback address"),
        ("http://[::1]:8080/hook", "::1 is a loopback address"),
        ("http://10.0.0.5/hook", "10.0.0.5 is a private address"),
        ("http://172.16.3.4/hook", "172.16.3.4 is a private address"),
        ("https://192.168.0.10/hook", "192.168.0.10 is a private address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://[fc00::1]/hook", "fc00::1 is a unique-local address"),
        ("http://[fe80::1]/hook", "fe80::1 is a link-local address"),
        ("http://[::ffff:127.0.0.1]/hook", "::ffff:127.0.0.1 (127.0.0.1) is a loopback address"),
        ("http://0x7f000001/hook", "0x7f000001 (127.0.0.1) is a loopback address"),
        ("http://2130706433/hook", "2130706433 (127.0.0.1) is a loopback address"),
        ("http://127.1/hook", "127.1 (127.0.0.1) is a loopback address"),
        ("http://0177.0.0.1/hook", "0177.0.0.1 (127.0.0.1) is a loopback address"),
        ("http://0.0.0.0:5000/hook", "0.0.0.0 is an unspecified address"),
        ("http://localhost:5000/hook", "localhost is a loopback address"),
        ("http://LocalHost./hook", "localhost is a loopback address"),
        ("http://api.localhost/hook", "api.localhost is a loopback address"),
    ],
)
def test_submitted_callbacks_to_private_addresses_are_refused(url, reason):
    with pytest.raises(CallbackRefused) as refused:
        check_callback_url(url, "")
    assert isinstance(refused.value, BadRequest)
    assert refused.value.code == "callback_refused"
    assert refused.value.message == f"callback host {reason}; callbacks may only reach public addresses"


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "file:///etc/passwd", "gopher://example.com/"])
def test_submitted_callbacks_with_other_schemes_are_refused_even_when_allow_listed(url):
    with pytest.raises(CallbackRefused, match="callbacks must use http or https"):
        check_callback_url(url, "example.com,localhost")


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.216.34/hook",
        "https://[2606:4700:4700::1111]/hook",
        # Names are resolved at delivery, not at submission: this one could not be.
        "https://hooks.example.invalid/hook",
    ],
)
def test_submitted_callbacks_to_public_hosts_and_names_are_accepted(url):
    assert check_callback_url(url, "") is None


def test_the_allow_list_names_exact_hosts_case_insensitively():
    check_callback_url("http://localhost:5000/hook", "localhost")
    check_callback_url("http://127.0.0.1:5000/hook", " LocalHost , 127.0.0.1 ")
    check_callback_url("http://LOCALHOST/hook", ["localhost"])
    with pytest.raises(CallbackRefused, match="127.0.0.2 is a loopback address"):
        check_callback_url("http://127.0.0.2/hook", "127.0.0.1,localhost")


# --- SSRF at delivery: refused, and nothing connects ---------------------------------------------------------

# Every spelling of the receiver's own loopback address; resolved at delivery, each reaches it.
LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "0x7f000001",
    "2130706433",
    "127.1",
    "0.0.0.0",  # Linux connects 0.0.0.0 to the local host
    "[::ffff:127.0.0.1]",
    "localhost",  # a name: resolved, and every address checked
    "LocalHost.",
]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_callbacks_aimed_at_the_local_host_are_refused_without_connecting(receivers, host):
    receiver = receivers()
    outcome = attempt(receiver.url(host), callback_settings())
    assert outcome.delivered is False
    assert outcome.detail.startswith("refused: ")
    assert "loopback address" in outcome.detail or "unspecified address" in outcome.detail
    assert outcome.retryable is False  # never retried
    assert quiet_period(receiver) == 0


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_the_same_callbacks_reach_the_receiver_when_their_host_is_allow_listed(receivers, host):
    # The twin of the test above: it shows that each refused spelling would have reached the listener.
    receiver = receivers()
    settings = callback_settings(callback_allow_hosts=f"example.org,{host.strip('[]')}")
    outcome = attempt(receiver.url(host), settings)
    assert (outcome.delivered, outcome.detail) == (True, "200"), outcome
    assert receiver.connections == 1
    [request] = receiver.requests
    assert request.path == "/hook?song=1"
    assert request.headers["Host"] == f"{host}:{receiver.port}"  # the URL's host, not the address connected to


def ipv6_receiver(receivers) -> Receiver:
    try:
        return receivers(host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")


def test_the_ipv6_loopback_is_refused_without_connecting_and_reached_when_allow_listed(receivers):
    receiver = ipv6_receiver(receivers)
    url = receiver.url("[::1]")
    refused = attempt(url, callback_settings())
    assert refused == Outcome(delivered=False, detail="refused: ::1 is a loopback address", retryable=False)
    assert quiet_period(receiver) == 0
    allowed = attempt(url, callback_settings(callback_allow_hosts="::1"))
    assert (allowed.delivered, receiver.connections) == (True, 1)


def test_a_malformed_url_is_refused_not_raised():
    outcome = attempt("http://[::1/hook", callback_settings())
    assert (outcome.delivered, outcome.detail, outcome.retryable) == (False, "refused: malformed url", False)


# --- signatures ----------------------------------------------------------------------------------------------


def test_the_signature_test_vector():
    assert sign(VECTOR_SECRET, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE
    assert VECTOR_BODY == json.dumps(DATA).encode()  # the body the worker sends for DATA


def test_verify_accepts_a_good_signature_and_rejects_tampering_and_stale_timestamps():
    now = VECTOR_TIMESTAMP + 10
    header = f"sha256={VECTOR_SIGNATURE}"
    assert verify(VECTOR_SECRET, VECTOR_TIMESTAMP, VECTOR_BODY, header, now=now)
    assert verify(VECTOR_SECRET, str(VECTOR_TIMESTAMP), VECTOR_BODY, VECTOR_SIGNATURE, now=now)
    assert not verify(VECTOR_SECRET, VECTOR_TIMESTAMP, VECTOR_BODY.replace(b"1", b"2"), header, now=now)
    assert not verify("another secret", VECTOR_TIMESTAMP, VECTOR_BODY, header, now=now)
    assert not verify(VECTOR_SECRET, VECTOR_TIMESTAMP + 1, VECTOR_BODY, header, now=now)
    assert not verify(VECTOR_SECRET, VECTOR_TIMESTAMP, VECTOR_BODY, header, now=VECTOR_TIMESTAMP + 301)
    assert not verify(VECTOR_SECRET, VECTOR_TIMESTAMP, VECTOR_BODY, header, now=VECTOR_TIMESTAMP - 301)
    assert not verify(VECTOR_SECRET, "yesterday", VECTOR_BODY, header, now=now)
    assert not verify(VECTOR_SECRET, VECTOR_TIMESTAMP, VECTOR_BODY, "sha256=caf\u00e9", now=now)


# --- delivery ------------------------------------------------------------------------------------------------


def test_a_delivery_carries_the_data_as_its_body_and_the_rest_in_signed_headers(receivers):
    receiver = receivers()
    settings = callback_settings(callback_allow_hosts="127.0.0.1", callback_secret="s3cret-for-test")
    outcome = attempt(receiver.url(), settings)
    assert (outcome.delivered, outcome.detail) == (True, "200")
    [request] = receiver.requests
    assert request.body == json.dumps(DATA).encode()
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Songhash"] == SONGHASH
    assert request.headers["X-Event-Id"] == EVENT_ID
    assert abs(int(request.headers["X-Timestamp"]) - time.time()) < 60
    assert request.headers["X-Signature"].startswith("sha256=")
    assert verify("s3cret-for-test", request.headers["X-Timestamp"], request.body, request.headers["X-Signature"])


def test_without_a_secret_deliveries_are_unsigned(receivers):
    receiver = receivers()
    attempt(receiver.url(), callback_settings(callback_allow_hosts="127.0.0.1"))
    [request] = receiver.requests
    assert "X-Signature" not in request.headers
    assert request.headers["X-Event-Id"] == EVENT_ID


def test_the_default_schedule_is_four_attempts_one_two_and_four_seconds_apart():
    sender = CallbackSender(callback_settings(), None, None, "w", None)
    assert [sender.retry.delay(attempt) for attempt in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert [sender.retry.allows(attempt) for attempt in (1, 2, 3, 4)] == [True, True, True, False]
    jobs = Retry(max_attempts=3, backoff=10, cap=15)  # a job's: capped, and up to a quarter shorter at random
    assert all(7.5 <= jobs.delay(1) <= 10 and 11.25 <= jobs.delay(2) <= 15 for _ in range(50))


def test_a_receiver_that_fails_twice_gets_a_third_attempt_after_doubling_waits(receivers, settings):
    """Through the worker's delivery threads and the callback queue in a real Redis: failed attempts wait in the
    queue (no thread sleeps), and the tenant's claim records each outcome."""
    receiver = receivers(statuses=[500, 500])
    settings = replace(settings, callback_allow_hosts="127.0.0.1", callback_backoff=0.25, callback_secret="k",
                       callback_threads=1)
    outcome = run_sender(settings, receiver.url(), lambda fields: fields.get("callback_state") == "delivered")
    assert outcome == {"callback_state": "delivered", "callback_attempts": "3", "callback_outcome": "200",
                       "callback_delivered": "true", "callback_job": "job", "callback": outcome["callback"]}
    assert [request.headers["X-Event-Id"] for request in receiver.requests] == ["job"] * 3
    assert all(verify("k", r.headers["X-Timestamp"], r.body, r.headers["X-Signature"]) for r in receiver.requests)
    gaps = [later - earlier for earlier, later in zip(receiver.times, receiver.times[1:], strict=False)]
    assert gaps[0] >= 0.25 and gaps[1] >= 0.5, gaps  # at least the backoff, doubling


def test_a_receiver_that_keeps_failing_is_given_up_on_after_the_attempts(receivers, settings):
    receiver = receivers(statuses=[503] * 10)
    settings = replace(settings, callback_allow_hosts="127.0.0.1", callback_backoff=0.05, callback_attempts=3,
                       callback_threads=1)
    outcome = run_sender(settings, receiver.url(), lambda fields: fields.get("callback_state") == "failed")
    assert (outcome["callback_attempts"], outcome["callback_outcome"]) == ("3", "503")
    assert len(receiver.requests) == 3


def run_sender(settings: Settings, url: str, finished) -> dict[str, str]:
    """A tenant's callback queued as a finished song queues it, delivered by one worker's delivery threads until
    `finished(claim fields)`; the claim's fields."""
    connection = connect_redis(settings)
    queue = JobQueue(connection, settings.worker_queue, settings.demucs_model)
    callbacks = ReliableQueue(connection, f"{settings.worker_queue}:callbacks")
    claim = "claim:open:result"
    connection.hset(claim, mapping={"callback": json.dumps({"url": url, "data": DATA}), "callback_job": "job"})
    callbacks.push("job-open", json.dumps({"result": "result", "songhash": SONGHASH, "event_id": "job",
                                           "tenant": "open", "callback": {"url": url, "data": DATA}}), time.time())
    sender = CallbackSender(settings, callbacks, Claims(connection, queue), "test-worker", WorkerMetrics())
    sender.start()
    try:
        wait_for(lambda: finished(connection.hgetall(claim)), 30, "the callback's last attempt")
    finally:
        sender.stop()
    assert callbacks.counts() == {"lane:default": 0, "delayed": 0, "taken": 0, "dead": 0}
    return connection.hgetall(claim)


def test_redirects_are_not_followed(receivers):
    elsewhere = receivers()
    redirecting = receivers(statuses=[302], location=elsewhere.url())
    outcome = attempt(redirecting.url(), callback_settings(callback_allow_hosts="127.0.0.1"))
    assert (outcome.delivered, outcome.detail) == (False, "302")
    assert len(redirecting.requests) == 1
    assert quiet_period(elsewhere) == 0


def test_a_receiver_slower_than_the_timeout_is_a_timeout(receivers):
    receiver = receivers(delay=10)
    settings = callback_settings(callback_allow_hosts="127.0.0.1", callback_timeout=0.5)
    started = time.monotonic()
    outcome = attempt(receiver.url(), settings)
    assert (outcome.delivered, outcome.detail, outcome.retryable) == (False, "timeout after 0.5 s", True)
    assert len(receiver.requests) == 1  # the attempt did reach it; it got no answer in time
    assert time.monotonic() - started < 5


def test_a_receiver_that_drips_its_answer_is_cut_off_at_the_attempt_deadline():
    # Each header byte comes well within the timeout, so only a wall-clock deadline ends the attempt.
    receiver = DrippingReceiver(interval=0.2, limit=100)  # 20 s of answer, then a proper end
    try:
        settings = callback_settings(callback_allow_hosts="127.0.0.1", callback_timeout=1.0)
        outcome = attempt(receiver.url, settings)
        assert (outcome.delivered, outcome.detail) == (False, "timeout after 1 s")
        wait_for(lambda: receiver.cut_off == 1, 10, "the receiver to find its client gone")
        assert receiver.finished == 0
    finally:
        receiver.close()


def test_a_closed_port_is_a_connection_failure_and_retried():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outcome = attempt(f"http://127.0.0.1:{port}/hook", callback_settings(callback_allow_hosts="127.0.0.1"))
    assert (outcome.delivered, outcome.retryable) == (False, True)
    assert outcome.detail.startswith("connection failed: ")


def test_logs_name_the_song_and_never_the_secret(receivers, caplog):
    receiver = receivers(statuses=[500])
    settings = callback_settings(callback_allow_hosts="127.0.0.1", callback_secret="never-log-me")
    with caplog.at_level(logging.DEBUG):
        attempt(receiver.url(), settings)
        attempt(receiver.url(), settings)
    assert f"song {SONGHASH}: callback attempt failed: 500" in caplog.text
    assert f"song {SONGHASH}: callback to 127.0.0.1 delivered (200)" in caplog.text
    assert "never-log-me" not in caplog.text


# --- TLS: connecting to the checked address still verifies the certificate against the URL's host -----------


def self_signed_tls(folder: Path, name: str) -> tuple[Path, ssl.SSLContext]:
    """A certificate for DNS name `name` only (no IP address in it): its file, and a server context using it."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return cert_path, context


def test_https_to_the_checked_address_verifies_the_certificate_for_the_url_host(receivers, tmp_path, monkeypatch):
    cert_path, context = self_signed_tls(tmp_path, "localhost")
    receiver = receivers(tls=context)
    settings = callback_settings(callback_allow_hosts="localhost")
    callback = Callback(receiver.url("localhost", scheme="https"), DATA)

    untrusted = attempt(callback.url, settings)
    assert untrusted.delivered is False
    assert "certificate verify failed" in untrusted.detail.lower()

    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))  # OpenSSL's default trust store, read per context
    trusted = attempt(callback.url, settings)
    assert (trusted.delivered, trusted.detail) == (True, "200")
    assert [request.body for request in receiver.requests] == [json.dumps(DATA).encode()]


def test_https_refuses_a_certificate_for_another_name(receivers, tmp_path, monkeypatch):
    cert_path, context = self_signed_tls(tmp_path, "other.example")
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))
    receiver = receivers(tls=context)
    settings = callback_settings(callback_allow_hosts="localhost")
    outcome = attempt(receiver.url("localhost", scheme="https"), settings)
    assert outcome.delivered is False
    assert "localhost" in outcome.detail and "other.example" in outcome.detail
    assert receiver.requests == []
