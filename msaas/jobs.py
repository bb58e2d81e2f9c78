"""The job on the wire: one song to separate with resolved options, as pushed onto the worker queue.

The JSON is flat and stays readable by older parts: `songhash` (or the reference's `hash`), each option by
name, `result`, `seconds`, `work` (what separating it costs: msaas/eta.py), `tenant`, `lane`, `callback`,
`enqueued_at`, `id`. A job pushed by a script may carry
only the songhash: whoever decodes it resolves what is missing with its own defaults, once. How many times a job
was attempted is the queue's to count (msaas/reliable.py), not the job's.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from msaas.errors import BadRequest, InvalidJob
from msaas.naming import SONGHASH, Result
from msaas.options import SPECS, Options

OPEN_TENANT = "open"  # whose songs they are when no keys are configured, and whose a script's jobs are
TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
JOB_ID = re.compile(r"[0-9a-zA-Z_-]{1,64}")  # ids name Redis keys
LANES = ("preview", "normal")  # a preview is taken before any song of the normal lane


def new_job_id() -> str:
    """Unique, and in the order jobs were made: the queue breaks ties between equal turns by it."""
    return f"{time.time_ns():016x}{secrets.token_hex(6)}"


@dataclass(frozen=True)
class Callback:
    url: str
    data: Any = field(default_factory=dict)

    @classmethod
    def parse(cls, value: object) -> Callback:
        if not isinstance(value, dict):
            raise BadRequest("callback must be an object with a 'url' and optional 'data'", "invalid_callback")
        url = value.get("url")
        shown = repr(url) if len(repr(url)) <= 200 else repr(url)[:197] + "..."
        try:
            parts = urlsplit(url) if isinstance(url, str) else None
            valid = parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:  # "http://[::1", "http://[zz]/": brackets that hold no IPv6 address
            valid = False
        if not valid:
            raise BadRequest(f"callback url {shown} is not an http(s) URL with a host", "invalid_callback")
        try:
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            raise BadRequest(f"callback url {shown} has a malformed port", "invalid_callback") from None
        if any(character.isspace() or not character.isprintable() for character in url):
            # urlsplit drops tabs and newlines ("http://a\tb/" reads as host "ab"); nothing can send them
            raise BadRequest(f"callback url {shown} holds whitespace or a control character", "invalid_callback")
        if not _valid_host(parts.hostname):
            raise BadRequest(f"callback url {shown} has a host that is neither a hostname nor an IP address",
                             "invalid_callback")
        data = value.get("data", {})
        try:  # it is sent as JSON, which has no NaN or infinities (Python would write them, receivers choke)
            json.dumps(data, allow_nan=False)
        except (ValueError, RecursionError):
            raise BadRequest("callback data must be JSON, with finite numbers (no NaN or Infinity)",
                             "invalid_callback") from None
        return cls(url=url, data=data)


HOST_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


def _valid_host(hostname: str) -> bool:
    """An IP literal, or a name of dot-separated labels (letters, digits, '-', '_'; IDN spelled as punycode)."""
    try:
        ipaddress.ip_address(hostname)
        return True
    except ValueError:
        pass
    try:
        name = hostname.removesuffix(".").encode("idna").decode("ascii")
    except UnicodeError:
        return False
    return len(name) <= 253 and all(HOST_LABEL.fullmatch(label) for label in name.split("."))


@dataclass(frozen=True)
class Job:
    songhash: str
    options: Options
    result: Result
    seconds: float = 0.0  # the song's length, decoded once where the job was accepted (msaas/audio.py)
    callback: Callback | None = None  # a script's job may carry one; the APIs keep each tenant's with its claim
    enqueued_at: float = field(default_factory=time.time)
    id: str = field(default_factory=new_job_id)  # the same in every delivery of this job
    tenant: str = OPEN_TENANT  # who queued it: its turn is that tenant's (msaas/jobqueue.py)
    lane: str = "normal"

    @classmethod
    def of(cls, songhash: str, options: Options, default_model: str, seconds: float = 0.0,
           callback: Callback | None = None, tenant: str = OPEN_TENANT) -> Job:
        return cls(songhash, options, options.result(songhash, default_model), seconds, callback, tenant=tenant)

    def to_json(self) -> str:
        body = {
            "songhash": self.songhash, **self.options.as_fields(), "result": self.result.id,
            "seconds": self.seconds, "work": self.options.work(self.seconds),
            "callback": None if self.callback is None else vars(self.callback),
            "enqueued_at": self.enqueued_at, "id": self.id, "tenant": self.tenant, "lane": self.lane,
        }
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes, default_model: str) -> Job:
        """Decode a queue entry; what it leaves out is resolved with `default_model`. InvalidJob otherwise."""
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as error:
            raise InvalidJob(f"job is not JSON: {error}") from None
        if not isinstance(body, dict):
            raise InvalidJob("job is not a JSON object")
        songhash = body.get("songhash", body.get("hash"))
        if not isinstance(songhash, str) or not SONGHASH.fullmatch(songhash.lower()):
            raise InvalidJob("job has no 'songhash' (56 hexadecimal characters)")
        songhash = songhash.lower()
        try:
            options = Options.resolve({spec.name: body.get(spec.name) for spec in SPECS}, default_model)
            callback = None if body.get("callback") is None else Callback.parse(body["callback"])
        except BadRequest as error:
            raise InvalidJob(f"job {error.message}") from None
        tenant = body.get("tenant") or OPEN_TENANT
        if not isinstance(tenant, str) or not TENANT_NAME.fullmatch(tenant):
            raise InvalidJob(f"job's 'tenant' {tenant!r} is not a tenant's name")
        return cls(
            songhash=songhash,
            options=options,
            result=_result(body.get("result"), songhash, options, default_model),
            seconds=_count(body.get("seconds", 0.0), "seconds", float),
            callback=callback,
            enqueued_at=_count(body.get("enqueued_at") or time.time(), "enqueued_at", float),
            id=entry_id(raw),
            tenant=tenant,
            lane=body.get("lane") if body.get("lane") in LANES else "normal",
        )


def entry_id(raw: str | bytes) -> str:
    """The id a queue entry goes by, as the queue's admission script derives it: the job's `id` when it is one, else
    the SHA-1 of its text (a job pushed by a script: every copy of it is the same job)."""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        body = None
    job_id = body.get("id") if isinstance(body, dict) else None
    if isinstance(job_id, str) and JOB_ID.fullmatch(job_id):
        return job_id
    return hashlib.sha1(raw if isinstance(raw, bytes) else raw.encode()).hexdigest()


def _result(value: object, songhash: str, options: Options, default_model: str) -> Result:
    """The result the accepting side named; it must be this song's, with these options or the plain name."""
    if value is None:
        return options.result(songhash, default_model)
    try:
        result = Result.parse(value) if isinstance(value, str) else None
    except ValueError:
        result = None
    if result is None or result.songhash != songhash or result.tag not in ("", options.tag):
        raise InvalidJob(f"job's 'result' {value!r} does not name song {songhash} with its options")
    return result


def _count(value: object, name: str, kind: type) -> Any:
    """A count or time in a job: a finite, non-negative number (a whole one for `int`), small enough for a float."""
    try:
        number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    except OverflowError:
        number = math.nan
    if not math.isfinite(number) or number < 0 or (kind is int and not number.is_integer()):
        raise InvalidJob(f"job's {name!r} must be a non-negative {'whole ' if kind is int else ''}number")
    return kind(value)
