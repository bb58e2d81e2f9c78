"""Who the clients are: tenants, each with its keys, weight and limits, from the tenants file or API_KEYS.

    {"tenants": [{"name": "acme", "keys": ["<key>", "sha256:<hex of a key>"], "weight": 3,
                  "requests_per_minute": 600, "audio_minutes_per_day": 300, "songs_queued": 20}],
     "admin_keys": ["<key>"]}

TENANTS_FILE names that file (the manifests mount it from a Secret). A tenant may hold several keys at once, so a
key rotates without a failed request: add the new key, move the clients, drop the old one. The file is read again
when it changes (checked every few seconds), so tenants, keys and limits change without a restart; a file that no
longer parses keeps the last good one in force, and says why in the log. Without a file, `API_KEYS=a,b` makes each
key a tenant of its own (named by a digest of it); with no keys at all the service is one open tenant, `open`.
Admin keys (the file's `admin_keys`, or ADMIN_KEYS) see every tenant's usage and the dead letters.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import re
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from msaas.errors import ConfigError
from msaas.jobs import OPEN_TENANT, TENANT_NAME

log = logging.getLogger(__name__)
RELOAD_SECONDS = 5.0  # how often the file's modification time is looked at
MAX_FILE_BYTES = 16 * 2**20  # 10,000 tenants with two keys each take about 2 MiB
# What a key can be: an HTTP header carries it as Latin-1 bytes (curl sends UTF-8: another digest), gRPC metadata as
# ASCII only, and a bearer token is stripped of spaces, so anything else would never match.
KEY = re.compile(r"[\x21-\x7e]+")
KEY_RULE = "keys are printable ASCII without spaces"
LIMITS = ("requests_per_minute", "audio_minutes_per_day", "songs_queued")  # 0: no limit of the tenant's own


@dataclass(frozen=True)
class Tenant:
    name: str
    weight: float = 1.0  # its share of the workers when several tenants have songs queued
    requests_per_minute: int = 0  # 0: the service's RATE_LIMIT_PER_MINUTE
    audio_minutes_per_day: float = 0.0  # audio accepted per UTC day; 0: no limit
    songs_queued: int = 0  # songs queued or processing at once; 0: no limit
    admin: bool = False
    key_digests: tuple[str, ...] = field(default=(), repr=False)


OPEN = Tenant(OPEN_TENANT)
ADMIN = Tenant("admin", admin=True)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Directory:
    """One version of the tenants: every key's digest to its tenant."""

    tenants: tuple[Tenant, ...]
    by_digest: dict[str, Tenant]

    @property
    def open(self) -> bool:
        """No tenant's keys: everyone is the open tenant (admin keys, if any, only open the admin routes)."""
        return all(tenant.admin for tenant in self.by_digest.values())

    @property
    def has_admin_keys(self) -> bool:
        return any(tenant.admin for tenant in self.by_digest.values())

    def find(self, key: str) -> Tenant | None:
        wanted = digest(key)
        # Compared in constant time, whichever key matches (or none).
        found = [tenant for known, tenant in self.by_digest.items() if hmac.compare_digest(known, wanted)]
        return found[0] if found else None

    @property
    def weights(self) -> dict[str, float]:
        return {tenant.name: tenant.weight for tenant in self.tenants}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(tenant.name for tenant in self.tenants)


def directory(tenants: list[Tenant], admin_keys: list[str]) -> Directory:
    by_digest: dict[str, Tenant] = {}
    for tenant in [*tenants, Tenant("admin", admin=True, key_digests=tuple(_digest_of(k) for k in admin_keys))]:
        for key_digest in tenant.key_digests:
            if key_digest in by_digest:
                raise ConfigError(f"a key of tenant {tenant.name} is also {by_digest[key_digest].name}'s")
            by_digest[key_digest] = tenant
    listed = tuple(tenants) or (OPEN,)
    return Directory(listed, by_digest)


def from_api_keys(api_keys: str, admin_keys: str = "") -> Directory:
    """`API_KEYS=a,b`: each key a tenant of its own, named by its digest."""
    keys = [key.strip() for key in api_keys.split(",") if key.strip()]
    tenants = [Tenant(f"key-{digest(key)[:12]}", key_digests=(digest(key),)) for key in keys]
    return directory(tenants, [key.strip() for key in admin_keys.split(",") if key.strip()])


def parse(text: str, admin_keys: str = "") -> Directory:
    """The tenants file's text; ConfigError naming what is wrong."""
    try:
        document = json.loads(text)
    except ValueError as error:
        raise ConfigError(f"the tenants file is not JSON: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("tenants", []), list):
        raise ConfigError("the tenants file must be an object with a list 'tenants'")
    tenants, names = [], set()
    for index, entry in enumerate(document.get("tenants", [])):
        tenant = _tenant(entry, index)
        if tenant.name in names or tenant.name in (OPEN.name, ADMIN.name):
            raise ConfigError(f"tenant name {tenant.name!r} is used twice or reserved")
        names.add(tenant.name)
        tenants.append(tenant)
    admins = document.get("admin_keys", [])
    if not isinstance(admins, list) or not all(isinstance(key, str) and key for key in admins):
        raise ConfigError("the tenants file's 'admin_keys' must be a list of keys")
    if not all(KEY.fullmatch(key) for key in admins):
        raise ConfigError(f"the tenants file's 'admin_keys' has a key that no client could send: {KEY_RULE}")
    return directory(tenants, [*admins, *(key.strip() for key in admin_keys.split(",") if key.strip())])


def _tenant(entry: object, index: int) -> Tenant:
    if not isinstance(entry, dict):
        raise ConfigError(f"tenant #{index + 1} is not an object")
    name = entry.get("name")
    if not isinstance(name, str) or not TENANT_NAME.fullmatch(name):
        raise ConfigError(f"tenant #{index + 1}'s name must be lowercase letters, digits, '-' or '_' (got {name!r})")
    keys = entry.get("keys")
    if not isinstance(keys, list) or not keys or not all(isinstance(key, str) and key for key in keys):
        raise ConfigError(f"tenant {name} needs a list 'keys' of one or more keys")
    if not all(KEY.fullmatch(key) for key in keys):
        raise ConfigError(f"tenant {name} has a key that no client could send: {KEY_RULE}")
    unknown = set(entry) - {"name", "keys", "weight", *LIMITS}
    if unknown:
        raise ConfigError(f"tenant {name} has unknown fields: {', '.join(sorted(unknown))}")
    values = {}
    for limit, kind in (("weight", float), ("requests_per_minute", int), ("audio_minutes_per_day", float),
                        ("songs_queued", int)):
        if limit in entry:
            value = entry[limit]
            number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            if not number or value < 0 or (kind is int and value != int(value)) or (limit == "weight" and value <= 0):
                sign = "positive" if limit == "weight" else "non-negative"
                raise ConfigError(f"tenant {name}'s {limit} must be a {sign} {'whole ' if kind is int else ''}number")
            values[limit] = kind(value)
    return Tenant(name, key_digests=tuple(_digest_of(key) for key in keys), **values)


def _digest_of(key: str) -> str:
    """A key as written in the file: the key itself, or `sha256:<hex>` of it (so the file need not hold it)."""
    if key.startswith("sha256:") and len(key) == 71:
        return key[7:].lower()
    return digest(key)


class Tenants:
    """The tenants in force, from TENANTS_FILE (re-read when it changes) or API_KEYS; thread-safe.

    A TENANTS_FILE that does not exist (an optional Secret not created yet) means API_KEYS' tenants, with a warning,
    until the file appears; one that exists but does not parse fails start-up, and later keeps the last good one."""

    def __init__(self, tenants_file: Path | None, api_keys: str = "", admin_keys: str = "") -> None:
        self.path = tenants_file
        self.api_keys = api_keys
        self.admin_keys = admin_keys
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self._version = _version(tenants_file) if tenants_file is not None else None
        if self._version is None:
            if tenants_file is not None:
                log.warning("TENANTS_FILE %s does not exist (yet): tenants from API_KEYS until it does", tenants_file)
            self._directory = from_api_keys(api_keys, admin_keys)
        else:
            try:
                self._directory = parse(_read(tenants_file), admin_keys)
            except ConfigError as error:
                if _parent is None or _parent.path != tenants_file:
                    raise  # a bad file fails start-up, naming why
                log.error("tenants file %s not read at this process's start, the last good one its parent read "
                          "stays in force: %s", tenants_file, error)
                self._directory, self._version = _parent._directory, _parent._version

    def current(self) -> Directory:
        if self.path is not None and time.monotonic() - self._checked >= RELOAD_SECONDS:
            self._reload()
        return self._directory

    def reload(self) -> Directory:
        """Read the file again now (an operator's or a test's nudge; otherwise within RELOAD_SECONDS)."""
        self._checked = -math.inf
        return self.current()

    def _reload(self) -> None:
        with self._lock:
            self._checked = time.monotonic()
            version = _version(self.path)
            if version == self._version:
                return
            try:
                self._directory = from_api_keys(self.api_keys, self.admin_keys) if version is None else parse(
                    _read(self.path), self.admin_keys)
                self._version = version
                log.info("tenants reloaded from %s: %s", self.path, ", ".join(self._directory.names))
            except ConfigError as error:
                log.error("tenants file %s not reloaded, the last good one stays in force: %s", self.path, error)


_parent: Tenants | None = None  # the tenants of the process this one was forked from (forking_server)


def forking_server(tenants_file: Path | None, api_keys: str = "", admin_keys: str = "") -> None:
    """In a process that forks servers of the tenants (gunicorn's master: at its start, then before each worker):
    read them, and leave what this process holds to the next child in case the file is bad by the time the child
    reads it. The first call reads them as a server's start does (a bad file raises ConfigError); later ones keep
    the last good one. So a bad file stops a service's start, never a new worker of a service that runs (one
    restarted while the file was bad, or still importing the app when it went bad, stopped the whole server).
    The state is this module's, so it outlives gunicorn's reload of its configuration file (SIGHUP)."""
    global _parent
    if _parent is None or _parent.path != tenants_file:
        _parent = Tenants(tenants_file, api_keys, admin_keys)
    else:
        _parent.reload()


def _version(path: Path) -> tuple[float, int, int] | None:
    """What tells one version of the file from another; None if there is no file."""
    try:
        stat = os.stat(path)  # follows the symlinks Kubernetes swaps when a mounted Secret changes
    except FileNotFoundError:
        return None
    return stat.st_mtime, stat.st_size, stat.st_ino


def _read(path: Path) -> str:
    """The file's text: a regular file of at most MAX_FILE_BYTES (a link swapped to /dev/zero, a FIFO or a huge file
    would otherwise hold the process that reads it, and its memory, for ever: it is read in a request)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO's open does not wait for a writer
    except OSError as error:
        raise ConfigError(f"TENANTS_FILE {path} cannot be read: {error.strerror}") from None
    with os.fdopen(descriptor, "rb") as file:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise ConfigError(f"TENANTS_FILE {path} is not a regular file")
        try:
            data = file.read(MAX_FILE_BYTES + 1)
        except OSError as error:
            raise ConfigError(f"TENANTS_FILE {path} cannot be read: {error.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"TENANTS_FILE {path} is larger than {MAX_FILE_BYTES // 2**20} MiB")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise ConfigError(f"TENANTS_FILE {path} is not UTF-8 text") from None
