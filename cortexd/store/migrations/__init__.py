"""Versioned schema migrations: ``<kind>/NNNN_name.sql``, applied in order.

Each backend records the versions it applied in a ``schema_migrations`` table
(version, name, applied_ms). A migration and its row are committed in one
transaction. Versions start at 1 and have no holes; a store whose highest
version is above the newest file here was migrated by a newer cortexd and is
refused, never guessed at.

Who migrates: an embedded SQLite store migrates itself at open (zero setup, one
hub). A PostgreSQL store is shared by hubs of possibly different releases, so a
hub migrates only an *empty* database (first start), and otherwise refuses a
schema that is behind and names the command that migrates it,
``cortexctl db migrate --store URL``.
"""

import re
from dataclasses import dataclass
from importlib import resources

from cortexd.store.base import StoreError

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class SchemaError(StoreError):
    """The store's schema is not the one this cortexd knows (behind, ahead, foreign)."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load(kind: str) -> list[Migration]:
    """The migrations of ``kind`` ("sqlite" or "pg"), in version order."""
    found = []
    for entry in resources.files(__name__).joinpath(kind).iterdir():
        if m := _NAME.match(entry.name):
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text()))
    found.sort(key=lambda x: x.version)
    if [x.version for x in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations/{kind}: versions must run 1, 2, 3, … without holes")
    return found


def functions(kind: str) -> str:
    """``<kind>/functions.sql``: stored functions, re-applied after every migrate (the
    numbered migrations hold tables and data only); "" when the kind has none."""
    path = resources.files(__name__).joinpath(kind).joinpath("functions.sql")
    return path.read_text() if path.is_file() else ""


def latest(kind: str) -> int:
    return len(load(kind))


def pending(kind: str, current: int) -> list[Migration]:
    return [x for x in load(kind) if x.version > current]


def ahead_message(where: str, current: int, known: int) -> str:
    return (f"store {where} has schema version {current}, newer than this cortexd knows "
            f"(version {known}): it was migrated by a newer release; run that release, or "
            "restore a backup taken before the migration")


def behind_message(where: str, current: int, known: int, url: str) -> str:
    names = ", ".join(f"{x.version:04d}_{x.name}" for x in pending("pg", current))
    return (f"store {where} has schema version {current}; this cortexd needs version "
            f"{known} (pending: {names}): run `cortexctl db migrate --store {url}`")
