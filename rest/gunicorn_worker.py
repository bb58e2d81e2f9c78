"""gunicorn's gevent worker, answering the requests gunicorn refuses itself in the API's JSON error shape.

gunicorn answers a request it cannot parse (a bad request line, a request line or header over its limits, a
malformed header) before the app sees it, with an HTML page. Clients of this API expect
`{"error": "<code>", "message": "<sentence>"}` for every error, so this worker writes that instead.
"""

from __future__ import annotations

import json

from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker

CODES = {400: "bad_request", 403: "forbidden", 414: "uri_too_long", 417: "expectation_failed",
         431: "header_fields_too_large", 500: "internal_error", 501: "not_implemented"}


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """`gunicorn.util.write_error`'s job, with a JSON body."""
    body = json.dumps({
        "error": CODES.get(status_int, "bad_request"),
        "message": mesg or reason,
    }).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


class JsonErrorGeventWorker(GeventWorker):
    def init_process(self) -> None:
        # gunicorn has no setting for its error pages: its handle_error calls util.write_error by name, so in
        # this worker process that name is the JSON writer.
        util.write_error = write_json_error
        super().init_process()
