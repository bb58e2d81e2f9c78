"""The REST API over HTTP with the standard library only, so `pip install .` brings in nothing else."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from msaas.cli.exits import NOT_FOUND, SERVER, USAGE, Failure

USER_AGENT = "msaas-cli/1"
CHUNK = 256 * 1024
TIMEOUT = 60.0  # seconds for one request; an upload of a large song on a slow link may need it
MIX_TIMEOUT = 1200.0  # seconds for a mix: the server renders it first (an hour's song may take minutes)


class ApiError(Failure):
    """The server answered with an error (`status` > 0), or could not be reached (`status` == 0)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code, message, {0: SERVER, 400: USAGE, 404: NOT_FOUND}.get(status, SERVER))
        self.status = status


class Client:
    def __init__(self, server: str, api_key: str = "") -> None:
        self.server = server.rstrip("/")
        self.api_key = api_key

    def url(self, path: str, query: dict[str, str] | None = None) -> str:
        """`path` on this server; a full URL (as the status route gives) keeps only its path and query."""
        parts = urllib.parse.urlsplit(path)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        if query:
            target += ("&" if parts.query else "?") + urllib.parse.urlencode(query)
        return self.server + target

    def request(
        self, method: str, path: str, query: dict[str, str] | None = None, body: BinaryIO | bytes | None = None,
        headers: dict[str, str] | None = None, timeout: float = TIMEOUT,
    ):
        """An open response for a 2xx answer; ApiError otherwise."""
        request = urllib.request.Request(self.url(path, query), data=body, method=method)
        request.add_header("User-Agent", USER_AGENT)
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - the user names the server
        except urllib.error.HTTPError as error:
            raise _api_error(error) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ApiError(0, "unreachable", f"cannot reach {self.server}: {reason}") from None

    def json(self, method: str, path: str, query: dict[str, str] | None = None, **kwargs) -> dict:
        with self.request(method, path, query, **kwargs) as response:
            text = response.read()
        try:
            answer = json.loads(text)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise ApiError(-1, "bad_answer", f"{self.server} answered {method} {path} with something other than a "
                                             f"JSON object: {text[:80]!r}")
        return answer

    def separate(self, song: Path, options: dict[str, str]) -> dict:
        """Upload the MP3 as a raw body, streamed from disk; options travel in the query."""
        with song.open("rb") as body:
            headers = {"Content-Type": "audio/mpeg", "Content-Length": str(song.stat().st_size)}
            return self.json("POST", "/apiv1/separate", options, body=body, headers=headers)

    def status(self, songhash: str, options: dict[str, str]) -> dict:
        return self.json("GET", f"/apiv1/status/{songhash}", options)

    def queue(self, cursor: str | None = None) -> dict:
        """One page of the tenant's listing: `queue` (waiting, next first), `songs` (with positions), `next`."""
        page = self.json("GET", "/apiv1/queue", {"cursor": cursor} if cursor else None)
        if not isinstance(page.get("queue"), list):
            raise ApiError(-1, "bad_answer", f"{self.server} answered the queue without a list")
        return page

    def usage(self) -> dict:
        return self.json("GET", "/apiv1/usage")

    def admin_usage(self) -> dict:
        return self.json("GET", "/apiv1/admin/usage")

    def dead_letters(self, cursor: str | None = None) -> dict:
        return self.json("GET", "/apiv1/admin/dead", {"cursor": cursor} if cursor else None)

    def dead_letter(self, entry_id: str) -> dict:
        return self.json("GET", f"/apiv1/admin/dead/{entry_id}")

    def retry_dead(self, entry_id: str) -> dict:
        return self.json("POST", f"/apiv1/admin/dead/{entry_id}/retry")

    def purge_dead(self, entry_id: str | None) -> dict:
        return self.json("DELETE", "/apiv1/admin/dead" + (f"/{entry_id}" if entry_id else ""))

    def download(self, path: str, destination: BinaryIO, query: dict[str, str] | None = None) -> int:
        """Stream a track into `destination`; the number of bytes."""
        size = 0
        with self.request("GET", path, query) as response:
            while chunk := response.read(CHUNK):
                destination.write(chunk)
                size += len(chunk)
        return size

    def remove(self, songhash: str, track: str | None, options: dict[str, str]) -> dict:
        if track is None:
            return self.json("DELETE", f"/apiv1/remove/{songhash}")
        return self.json("DELETE", f"/apiv1/remove/{songhash}/{track}", options)

    def cancel(self, songhash: str) -> dict:
        return self.json("POST", f"/apiv1/cancel/{songhash}")

    def mix(self, songhash: str, options: dict[str, str], recipe: dict, destination: BinaryIO) -> dict:
        """Stream the mix `recipe` asks for into `destination`; what the server says of it (digest, cache)."""
        body, headers = json.dumps(recipe).encode(), {"Content-Type": "application/json"}
        with self.request("POST", f"/apiv1/mix/{songhash}", options, body, headers, MIX_TIMEOUT) as response:
            while chunk := response.read(CHUNK):
                destination.write(chunk)
            return {"digest": response.headers.get("X-Mix-Digest"), "cache": response.headers.get("X-Mix-Cache")}

    def mix_link(self, songhash: str, options: dict[str, str], recipe: dict) -> dict:
        """A link to the mix (valid 15 minutes), its size, digest and file name."""
        body, headers = json.dumps(recipe).encode(), {"Content-Type": "application/json"}
        with self.request("POST", f"/apiv1/mix/{songhash}", {**options, "link": "1"}, body, headers,
                          MIX_TIMEOUT) as response:
            return json.loads(response.read())

    def watch(self, songhash: str, options: dict[str, str], interval: float, timeout: float | None) -> Iterator[dict]:
        """The song's status every `interval` seconds until the caller stops (it ended); stops at `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            yield self.status(songhash, options)
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(interval)


def _api_error(error: urllib.error.HTTPError) -> ApiError:
    """The API's errors are {"error": code, "message": sentence}; a proxy's may be anything."""
    text = error.read().decode(errors="replace")
    try:
        body = json.loads(text)
        return ApiError(error.code, str(body["error"]), str(body["message"]))
    except (ValueError, KeyError, TypeError):
        return ApiError(error.code, f"http_{error.code}", text.strip()[:200] or str(error.reason))
