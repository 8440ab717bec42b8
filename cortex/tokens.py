"""Bearer-token credentials for nodes and clients.

Tokens are random; only their SHA-256 is stored on the hub, in a text file of
``<name> <role> <sha256-hex>`` lines. A credential maps to a principal (name and
role); the node's identity is the principal's name, never a payload field.
"""

import contextlib
import fcntl
import hashlib
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cortex.errors import ConfigError
from cortex.ids import is_node_id

ROLES = ("node", "client", "admin")
METADATA_KEY = "authorization"


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str


def new_token() -> str:
    return "ctk_" + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer(token: str) -> tuple[tuple[str, str]]:
    return ((METADATA_KEY, f"Bearer {token}"),)


def read_token_file(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as e:
        raise ConfigError(f"cannot read token file {path}: {e.strerror}") from e
    if not token:
        raise ConfigError(f"token file {path} is empty")
    return token


#: How stale a process's view of the tokens file may get before a lookup re-checks it.
REFRESH_S = 1.0


@dataclass(frozen=True, slots=True)
class Credential:
    """One line of the tokens file, as listings show it (never the token)."""

    name: str
    role: str
    sha256: str

    @property
    def fingerprint(self) -> str:
        return self.sha256[:12]


class TokenTable:
    """The hub's table of credentials, re-read when the file changes.

    Every process of a hub holds its own table and re-checks the file (one ``stat``) at
    most every :data:`REFRESH_S` on a lookup, and at once on a miss: a credential
    revoked or replaced (``cortexd enroll`` again, ``cortexctl tokens revoke``) stops
    working within a second in a running hub, and a shard drops a stream whose
    credential is gone at its next heartbeat (:meth:`holds`; issue 13). Writes replace
    the file atomically under a lock, so an enroll and a revoke at once lose nothing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._by_hash: dict[str, Principal] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._checked = float("-inf")

    def load(self) -> None:
        self._checked = time.monotonic()
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._by_hash, self._stamp = {}, None
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)  # a replace is a new inode
        if stamp == self._stamp:
            return
        table = {c.sha256: Principal(c.name, c.role) for c in self._parse()}
        self._by_hash, self._stamp = table, stamp

    def _refresh(self) -> None:
        if time.monotonic() - self._checked >= REFRESH_S:
            self.load()

    def _parse(self) -> list[Credential]:
        out = []
        for lineno, line in enumerate(self.path.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 3 or parts[1] not in ROLES or len(parts[2]) != 64:
                raise ConfigError(f"{self.path}:{lineno}: expected '<name> <role> <sha256>'")
            out.append(Credential(parts[0], parts[1], parts[2]))
        return out

    def lookup(self, token: str) -> Principal | None:
        self._refresh()
        found = self._by_hash.get(token_hash(token))
        if found is None:
            self.load()  # a node enrolled since the last load
            found = self._by_hash.get(token_hash(token))
        return found

    def holds(self, sha256: str) -> bool:
        """Whether the credential with this hash is still in the table."""
        self._refresh()
        return sha256 in self._by_hash

    def credentials(self) -> list[Credential]:
        """Every credential in the file, in its order."""
        return self._parse() if self.path.exists() else []

    def add(self, name: str, role: str) -> str:
        """Mint a token for ``name``; replaces any earlier token of that name and role."""
        if role not in ROLES:
            raise ConfigError(f"role must be one of {ROLES}")
        if not is_node_id(name):
            raise ConfigError(f"name {name!r} is not a valid identifier")
        token = new_token()
        with self._locked():
            lines = [line for line in self._lines()
                     if line.split()[:2] != [name, role]]
            self._write([*lines, f"{name} {role} {token_hash(token)}"])
        self.load()
        return token

    def revoke(self, name: str, role: str = "", fingerprint: str = "") -> list[Credential]:
        """Remove ``name``'s credentials (of ``role``, or every role; only the one whose
        sha256 starts with ``fingerprint`` when given); the ones removed."""
        removed: list[Credential] = []
        with self._locked():
            kept = []
            for line in self._lines():
                parts = line.split()
                if (len(parts) == 3 and parts[0] == name and role in ("", parts[1])
                        and parts[2].startswith(fingerprint)):
                    removed.append(Credential(*parts))
                else:
                    kept.append(line)
            if removed:
                self._write(kept)
        self.load()
        return removed

    def _lines(self) -> list[str]:
        if not self.path.exists():
            return []
        return [line for line in self.path.read_text().splitlines() if line.strip()]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, lines: list[str]) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n" if lines else "")
        os.replace(tmp, self.path)
