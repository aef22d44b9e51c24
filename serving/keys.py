"""API keys with roles, from a keys file that holds only hashes of the keys.

```toml
[keys.campaign-team]
role = "marketing"          # lists, segments, tags, crowds, profiles without sensitive attributes
hash = "sha256:9f86d0..."   # SHA-256 of the key; the key itself is shown once, never stored

[keys.alice]
role = "analyst"            # everything: also POST /score, /models, full profiles
hash = "sha256:..."
```

``portrait keys add NAME --role ROLE --keys FILE`` draws a random key (256 bits), prints it once
and appends its hash. A key is a random token, not a password, so one unsalted SHA-256 is
enough: recovering a key from its hash means guessing 256 random bits. To revoke a key, delete
its section; the server reads the file again when it changes.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from portrait.errors import ConfigError, Unavailable
from portrait.files import atomic_write_text

log = logging.getLogger(__name__)

HASH_PREFIX = "sha256:"
_HASH = re.compile(r"sha256:[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class Role(StrEnum):
    MARKETING = "marketing"
    ANALYST = "analyst"


ROLE_HELP = {
    Role.MARKETING: "lists, segments, tags, crowd reports and profiles without sensitive attributes",
    Role.ANALYST: "everything: also POST /score, /models and full profiles",
}


@dataclass(frozen=True)
class Caller:
    """Who is asking: the key's name (what the audit log records) and its role."""

    name: str
    role: Role


def hash_key(key: str) -> str:
    return HASH_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return "pk_" + secrets.token_urlsafe(32)


def load_keys(path: Path) -> dict[str, Caller]:
    """The keys file as hash to caller; every entry checked (role, hash, no unknown field, no
    hash twice), errors naming the file and the key's name."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"keys file {path} does not exist; create keys with portrait keys add") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"keys file {path} cannot be read: {exc}") from None
    unknown = sorted(set(raw) - {"keys"})
    if unknown:
        raise ConfigError(f"keys file {path}: unknown section(s) {unknown}; only [keys.NAME] sections")
    entries = raw.get("keys", {})
    if not isinstance(entries, dict):
        raise ConfigError(f"keys file {path}: keys must be [keys.NAME] sections")
    found: dict[str, Caller] = {}
    roles = ", ".join(repr(r.value) for r in Role)
    for name, entry in entries.items():
        where = f"keys file {path}, [keys.{name}]"
        if not _NAME.fullmatch(name):
            raise ConfigError(f"{where}: a name is letters, digits, '_', '-' or '.' (at most 64)")
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: must be a section with role and hash")
        extra = sorted(set(entry) - {"role", "hash", "note"})
        if extra:
            raise ConfigError(f"{where}: unknown field(s) {extra}; fields: role, hash, note")
        role, digest = entry.get("role"), entry.get("hash")
        if role not in {r.value for r in Role}:
            raise ConfigError(f"{where}: role {role!r} is not one of {roles}")
        if not isinstance(digest, str) or not _HASH.fullmatch(digest):
            raise ConfigError(
                f"{where}: hash must be 'sha256:' and 64 hex digits (the key's hash, never the key itself)"
            )
        if digest in found:
            raise ConfigError(f"{where}: the same key as [keys.{found[digest].name}]")
        found[digest] = Caller(name, Role(role))
    return found


def add_key(path: Path, name: str, role: Role | str) -> str:
    """Draw a new key for ``name`` with ``role``, append its hash to the keys file (created if
    missing, written atomically, comments kept) and return the key: the only time it exists."""
    role = Role(role)
    if not _NAME.fullmatch(name):
        raise ConfigError(f"key name {name!r}: letters, digits, '_', '-' or '.' (at most 64), starting with one")
    path = Path(path)
    before = path.read_text(encoding="utf-8") if path.exists() else ""
    if before:
        existing = load_keys(path)
        # Names that differ only in case would read as one caller in the audit log.
        same = [caller.name for caller in existing.values() if caller.name.lower() == name.lower()]
        if same:
            raise ConfigError(f"keys file {path} already has a key named {same[0]!r}; delete its section first")
    key = new_key()
    # Quoted: a bare dotted name ([keys.a.b]) would be a table inside a table in TOML.
    block = f'[keys."{name}"]\nrole = "{role.value}"\nhash = "{hash_key(key)}"\n'
    text = (before.rstrip("\n") + "\n\n" if before.strip() else "") + block
    path.parent.mkdir(parents=True, exist_ok=True)
    # Owner only: the hashes are not the keys, but who holds which role is the operator's business.
    atomic_write_text(text, path, mode=0o600)
    return key


class KeyRing:
    """The keys of a keys file, read again whenever the file changes (a revoked key stops
    working without a restart). An unreadable or invalid file answers 503 rather than let
    anyone in."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._keys = self._read()

    def _read(self) -> dict[str, Caller]:
        stat = self.path.stat() if self.path.exists() else None
        keys = load_keys(self.path)
        self._stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size) if stat else None
        return keys

    def current(self) -> dict[str, Caller]:
        try:
            stat = self.path.stat()
            stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        except OSError:
            raise Unavailable(f"the keys file {self.path} is gone; nobody can be let in") from None
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    try:
                        self._keys = self._read()
                    except ConfigError as exc:
                        # The whole message to the operator's log; to callers, who may hold no
                        # key at all, only that the file is broken, not how or where.
                        log.error("%s; nobody can be let in until it is fixed", exc)
                        raise Unavailable(
                            "the server's keys file cannot be used (its operator finds why in the server's log); "
                            "nobody can be let in until it is fixed"
                        ) from None
        return self._keys

    def caller(self, key: str) -> Caller | None:
        return self.current().get(hash_key(key))
