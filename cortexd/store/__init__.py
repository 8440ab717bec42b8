"""Persistence behind one interface: SQLite (WAL) embedded by default, PostgreSQL shared.

``store`` URLs: ``sqlite:///PATH`` or ``postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?…]``
(``postgres://`` too). ``open_store`` builds one (call ``open()`` on it),
``check_store`` says whether a URL is usable by this release without changing
anything, and ``migrate_store`` brings its schema up to date.
"""

import sqlite3
from pathlib import Path

from cortexd.store.base import NodeRow, StaleWrite, Store, StoreError, TaskRow, TransitionRow
from cortexd.store.migrations import SchemaError

PG_SCHEMES = ("postgresql://", "postgres://")


def is_store_url(url: str) -> bool:
    return url.startswith("sqlite:///") or url.startswith(PG_SCHEMES)


def open_store(url: str, *, batch_max: int = 512, flush_delay_ms: float = 0.0,
               pool_size: int = 4) -> Store:
    """Create the store named by ``url``; call ``open()`` on it."""
    if url.startswith(PG_SCHEMES):
        from cortexd.store.postgres import PostgresStore

        return PostgresStore(url, pool_size=pool_size, batch_max=batch_max,
                             flush_delay_ms=flush_delay_ms)
    if url.startswith("sqlite:///"):
        from cortexd.store.sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"), batch_max=batch_max,
                           flush_delay_ms=flush_delay_ms)
    raise StoreError(f"store {url!r}: expected sqlite:///PATH or postgresql://…")


async def check_store(url: str) -> str:
    """Connect, read the schema version, change nothing: one line if usable, else raise
    StoreError (SchemaError for a schema this release cannot run against)."""
    if url.startswith(PG_SCHEMES):
        from cortexd.store import pgschema

        return await pgschema.check(url)
    from cortexd.store import migrations
    from cortexd.store.sqlite import KIND, schema_version

    path = Path(url.removeprefix("sqlite:///"))
    if not path.exists():
        return f"store {path}: does not exist yet, cortexd creates it at first start"
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            current = schema_version(db)
        finally:
            db.close()
    except sqlite3.Error as e:
        raise StoreError(f"store {path}: cannot read it: {e}") from e
    known = migrations.latest(KIND)
    if current > known:
        raise SchemaError(migrations.ahead_message(str(path), current, known))
    if current < known:
        return f"store {path}: schema version {current}, cortexd migrates it to {known} at start"
    return f"store {path}: schema version {current} (current)"


async def migrate_store(url: str) -> tuple[int, int]:
    """Apply pending migrations; return (version before, version after)."""
    if url.startswith(PG_SCHEMES):
        import psycopg

        from cortexd.store import pgschema

        conn = await pgschema.connect(url)
        try:
            return await pgschema.migrate(conn, pgschema.redact(url))
        except psycopg.Error as e:
            raise StoreError(f"store {pgschema.redact(url)}: migration failed: {e}") from e
        finally:
            await conn.close()
    from cortexd.store.sqlite import migrate

    path = Path(url.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = sqlite3.connect(path, isolation_level=None)
        try:
            return migrate(db, str(path))
        finally:
            db.close()
    except sqlite3.Error as e:
        raise StoreError(f"store {path}: migration failed: {e}") from e


__all__ = ["NodeRow", "SchemaError", "StaleWrite", "Store", "StoreError", "TaskRow",
           "TransitionRow", "check_store", "is_store_url", "migrate_store", "open_store"]
