"""Connection floods, for tests and benchmarks: many TCP connections that send nothing (or a request's first
bytes, or a byte at a time), each reopened as soon as the server closes it (as an attacker would), from one or
several local addresses (127.0.0.2, 127.0.0.3... are this machine too on Linux: the client socket is bound to
one before it connects). And what the server holds from them, read from /proc/net/tcp."""

from __future__ import annotations

import errno
import resource
import selectors
import socket
import struct
import threading
import time
from collections import Counter
from pathlib import Path

SPARE_DESCRIPTORS = 256  # what this process needs besides the flood's sockets
# Closed with a reset, not a FIN: no TIME_WAIT left behind for each of the thousands of connections a flood goes
# through, which would hold this machine's ephemeral ports for a minute.
RESET_ON_CLOSE = struct.pack("ii", 1, 0)


class IdleFlood:
    """`with IdleFlood(port, 1100):` holds 1,100 connections to 127.0.0.1:`port` that never send a byte, until
    the block ends. With `greeting`, each sends those bytes once connected (a request's start, to get past a
    server that waits for a connection's first bytes before accepting it), then nothing; with `drip` too, one
    byte of them every `drip` seconds (a slow client)."""

    def __init__(
        self, port: int, count: int, sources: tuple[str, ...] = ("127.0.0.1",), greeting: bytes = b"",
        drip: float = 0.0, host: str = "127.0.0.1",
    ) -> None:
        self.port, self.count, self.sources, self.host = port, count, sources, host
        self.greeting, self.drip = greeting, drip
        self.reopened = 0  # connections the server closed, each opened again at once...
        self.reopening = True  # ...while this is True
        self._sent: dict[socket.socket, int] = {}  # connected ones: how much of the greeting each has sent
        self._selector = selectors.DefaultSelector()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._hold, name="idle-flood", daemon=True)

    def __enter__(self) -> IdleFlood:
        _allow_descriptors(self.count + SPARE_DESCRIPTORS)
        for index in range(self.count):
            self._open(self.sources[index % len(self.sources)])
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stopping.set()
        self._thread.join(10)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()
        self._selector.close()

    def _open(self, source: str) -> None:
        connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        connection.setblocking(False)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
        connection.bind((source, 0))
        code = connection.connect_ex((self.host, self.port))
        if code not in (0, errno.EINPROGRESS):
            connection.close()
            raise OSError(code, f"the flood could not connect from {source}: {errno.errorcode.get(code, code)}")
        self._selector.register(connection, selectors.EVENT_WRITE if self.greeting else selectors.EVENT_READ, source)

    def _hold(self) -> None:
        """Whatever arrives on a connection (the server's close, or an answer before it) ends it; reopen it."""
        closed: list[str] = []  # sources of the connections to open again
        next_drip = time.monotonic() + self.drip
        while not self._stopping.is_set():
            for source in list(closed):
                try:
                    self._open(source)
                    closed.remove(source)
                except OSError:
                    break  # out of ports or refused for now: the next turn tries again
            if self.drip and time.monotonic() >= next_drip:
                next_drip += self.drip
                for connection in list(self._sent):
                    self._send(connection, 1)
            for key, events in self._selector.select(timeout=0.01 if closed else 0.2):
                connection = key.fileobj
                if events & selectors.EVENT_WRITE:
                    self._selector.modify(connection, selectors.EVENT_READ, key.data)
                    self._sent[connection] = 0
                    if self._send(connection, 1 if self.drip else len(self.greeting)):
                        continue
                try:
                    if connection.recv(65536):
                        continue  # an answer: its close follows
                except BlockingIOError:
                    continue
                except OSError:
                    pass  # reset, or never connected
                self._selector.unregister(connection)
                self._sent.pop(connection, None)
                connection.close()
                if self.reopening:
                    self.reopened += 1
                    closed.append(key.data)

    def _send(self, connection: socket.socket, size: int) -> bool:
        """The greeting's next `size` bytes (False: the connection has failed; its read says so)."""
        sent = self._sent[connection]
        try:
            self._sent[connection] = sent + connection.send(self.greeting[sent : sent + size])
        except BlockingIOError:
            pass
        except OSError:
            return False
        return True


def held_by_server(port: int) -> Counter[str]:
    """Connections a server listening on `port` holds open, by client address: ESTABLISHED sockets whose local port
    is `port` and that a process has accepted (those still in the listen queue have inode 0)."""
    held: Counter[str] = Counter()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        if state == "01" and int(local.split(":")[1], 16) == port and inode != "0":
            held[socket.inet_ntoa(bytes.fromhex(remote.split(":")[0])[::-1])] += 1
    return held


def _allow_descriptors(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise OSError(f"a flood of this size needs {needed} file descriptors; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
