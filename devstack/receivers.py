"""A hostile callback receiver, for tests and benchmarks: it answers `HTTP/1.1 200 OK` at once, then one
header byte every `interval` seconds, so no single socket read ever waits long, until it is released (or
`limit` bytes have dripped), when it ends the answer properly."""

from __future__ import annotations

import socket
import threading
import time

HEAD = b"HTTP/1.1 200 OK\r\n"
TAIL = b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class DrippingReceiver:
    def __init__(self, interval: float = 0.5, limit: int = 10_000) -> None:
        self.interval = interval
        self.limit = limit
        self.released = threading.Event()
        self.requests: list[bytes] = []  # each request's head and body, as received
        self.arrivals: list[float] = []  # when each request had arrived whole (time.time())
        self.dripping = threading.Event()  # set once a request is being answered byte by byte
        self.cut_off = 0  # answers the client gave up on mid-drip (it closed or shut down its socket)
        self.finished = 0  # answers sent whole
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> DrippingReceiver:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.released.set()
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            try:
                self.requests.append(_read_request(connection))
                self.arrivals.append(time.time())
                connection.sendall(HEAD + b"X-Drip: ")
                self.dripping.set()
                for _ in range(self.limit):
                    if self.released.wait(self.interval):
                        break
                    connection.sendall(b"a")
                connection.sendall(TAIL)
            except OSError:
                self.cut_off += 1
                return
            self.finished += 1


def _read_request(connection: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body
