"""Bearer-token credentials for nodes and clients.

Tokens are random; only their SHA-256 is stored on the hub, in a text file of
``<name> <role> <sha256-hex>`` lines. A credential maps to a principal (name and
role); the node's identity is the principal's name, never a payload field.
"""

import hashlib
import os
import secrets
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


class TokenTable:
    """The hub's table of credentials, reloaded when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._by_hash: dict[str, Principal] = {}
        self._mtime_ns = -1

    def load(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._by_hash, self._mtime_ns = {}, -1
            return
        if st.st_mtime_ns == self._mtime_ns:
            return
        table: dict[str, Principal] = {}
        for lineno, line in enumerate(self.path.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 3 or parts[1] not in ROLES or len(parts[2]) != 64:
                raise ConfigError(f"{self.path}:{lineno}: expected '<name> <role> <sha256>'")
            table[parts[2]] = Principal(parts[0], parts[1])
        self._by_hash, self._mtime_ns = table, st.st_mtime_ns

    def lookup(self, token: str) -> Principal | None:
        found = self._by_hash.get(token_hash(token))
        if found is None:
            self.load()  # a node enrolled since the last load
            found = self._by_hash.get(token_hash(token))
        return found

    def add(self, name: str, role: str) -> str:
        """Mint a token for ``name``; replaces any earlier token of that name and role."""
        if role not in ROLES:
            raise ConfigError(f"role must be one of {ROLES}")
        if not is_node_id(name):
            raise ConfigError(f"name {name!r} is not a valid identifier")
        token = new_token()
        lines = []
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[0] == name and parts[1] == role:
                    continue
                lines.append(line)
        lines.append(f"{name} {role} {token_hash(token)}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, self.path)
        self.load()
        return token
