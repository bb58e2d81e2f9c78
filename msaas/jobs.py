"""The job on the wire: one song to separate with resolved options, as pushed onto the worker queue.

The JSON is flat and stays readable by older parts: `songhash` (or the reference's `hash`), each option by
name, `result`, `seconds`, `callback`, `enqueued_at`, `id`, `attempts`. A job pushed by a script may carry only
the songhash: whoever decodes it resolves what is missing with its own defaults, once.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from msaas.errors import BadRequest, InvalidJob
from msaas.naming import SONGHASH, Result
from msaas.options import SPECS, Options


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
        return cls(url=url, data=value.get("data", {}))


@dataclass(frozen=True)
class Job:
    songhash: str
    options: Options
    result: Result
    seconds: float = 0.0  # the song's length, decoded where the job was accepted (msaas/audio.py)
    callback: Callback | None = None
    enqueued_at: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)  # the same in every delivery of this job
    attempts: int = 0  # deliveries that ended without a result so far

    @classmethod
    def of(cls, songhash: str, options: Options, default_model: str, seconds: float = 0.0,
           callback: Callback | None = None) -> Job:
        return cls(songhash, options, options.result(songhash, default_model), seconds, callback)

    def to_json(self) -> str:
        body = {
            "songhash": self.songhash, **self.options.as_fields(), "result": self.result.id,
            "seconds": self.seconds, "callback": None if self.callback is None else vars(self.callback),
            "enqueued_at": self.enqueued_at, "id": self.id, "attempts": self.attempts,
        }
        return json.dumps(body, separators=(",", ":"))

    def next_attempt(self) -> Job:
        return replace(self, attempts=self.attempts + 1)

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
        return cls(
            songhash=songhash,
            options=options,
            result=_result(body.get("result"), songhash, options, default_model),
            seconds=_count(body.get("seconds", 0.0), "seconds", float),
            callback=callback,
            enqueued_at=_count(body.get("enqueued_at") or time.time(), "enqueued_at", float),
            # A job pushed by a script has no id: one derived from its text is the same for every copy of it.
            id=str(body.get("id") or hashlib.sha256(raw if isinstance(raw, bytes) else raw.encode()).hexdigest()[:32]),
            attempts=_count(body.get("attempts", 0), "attempts", int),
        )


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
