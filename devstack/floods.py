"""Connection floods, for tests and benchmarks: TCP connections that never send a byte, each reopened as soon as
the server closes it (as an attacker would), from one or several local addresses (127.0.0.2, 127.0.0.3... are
this machine too on Linux: the client socket is bound to one before it connects). And what the server holds
from them, read from /proc/net/tcp."""

from __future__ import annotations

import errno
import resource
import selectors
import socket
import struct
import threading
from collections import Counter
from pathlib import Path

SPARE_DESCRIPTORS = 256  # what this process needs besides the flood's sockets


class IdleFlood:
    """`with IdleFlood(port, 1100):` holds 1,100 silent connections to 127.0.0.1:`port` until the block ends;
    with `greeting`, each sends those bytes first (the start of a request, to get past a server that waits for
    a connection's first bytes before it accepts it), then nothing more."""

    def __init__(
        self, port: int, count: int, sources: tuple[str, ...] = ("127.0.0.1",), greeting: bytes = b"",
        host: str = "127.0.0.1",
    ) -> None:
        self.port, self.count, self.sources, self.greeting, self.host = port, count, sources, greeting, host
        self.reopened = 0  # connections the server closed, each opened again at once
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
        # Closed with a reset, not a FIN: no TIME_WAIT left behind for each of the thousands of connections a
        # flood goes through, which would hold this machine's ephemeral ports for a minute.
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.bind((source, 0))
        code = connection.connect_ex((self.host, self.port))
        if code not in (0, errno.EINPROGRESS):
            connection.close()
            raise OSError(code, f"the flood could not connect from {source}: {errno.errorcode.get(code, code)}")
        self._selector.register(connection, selectors.EVENT_WRITE if self.greeting else selectors.EVENT_READ, source)

    def _hold(self) -> None:
        """Whatever arrives on a connection (the server's close, or an answer before it) ends it; reopen it."""
        closed: list[str] = []  # sources of the connections to open again
        while not self._stopping.is_set():
            for source in list(closed):
                try:
                    self._open(source)
                    closed.remove(source)
                except OSError:
                    break  # out of ports or refused for now: the next turn tries again
            for key, events in self._selector.select(timeout=0.01 if closed else 0.2):
                connection = key.fileobj
                if events & selectors.EVENT_WRITE and self._greet(connection, key.data):
                    continue
                try:
                    if connection.recv(65536):
                        continue  # an answer: its close follows
                except BlockingIOError:
                    continue
                except OSError:
                    pass  # reset
                self._selector.unregister(connection)
                connection.close()
                self.reopened += 1
                closed.append(key.data)

    def _greet(self, connection: socket.socket, source: str) -> bool:
        """Connected: send the greeting and wait for the server from now on (False: the connection failed)."""
        try:
            connection.send(self.greeting)
        except OSError:
            return False
        self._selector.modify(connection, selectors.EVENT_READ, source)
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
