"""Reaching a PostgreSQL store and keeping its schema: connect, check, migrate.

What ``cortexd --check-config``, ``cortexctl db`` and :class:`PostgresStore.open`
share before any task is written:

- :func:`connect` opens one autocommit connection, or raises a :class:`StoreError`
  that says what is wrong (with a hint: nothing listening, unknown database, …);
  messages never show the password (:func:`redact`).
- :func:`migrate` applies the pending files of ``migrations/pg``, each in its own
  transaction, serialized between hubs and ``cortexctl`` by an advisory lock, and
  re-applies the stored functions (one file, idempotent) when the schema is current.
- :func:`check` compares the schema with this release's and changes nothing.
"""

import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from cortexd.store import migrations
from cortexd.store.base import StoreError
from cortexd.store.migrations import SchemaError

KIND = "pg"
CONNECT_TIMEOUT_S = 5
#: Serializes migrations of one database between hubs and cortexctl (any 64-bit key).
MIGRATION_LOCK = 0x636F72746578  # "cortex"


def redact(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def _hint(text: str) -> str:
    if "Connection refused" in text:
        return "nothing listens there: is PostgreSQL running, on that host and port?"
    if "resolve host" in text:
        return "the host name does not resolve"
    if "timeout expired" in text:
        return "no answer within the connect timeout: host down or a firewall"
    if "database" in text and "does not exist" in text:
        return "create the database (createdb), or fix its name in the URL"
    if "role" in text and "does not exist" in text:
        return "no such user: fix the user name in the URL"
    if "password" in text or "authentication" in text:
        return "authentication failed: check the user and password (URL, PGPASSWORD, ~/.pgpass)"
    return ""


async def connect(url: str) -> psycopg.AsyncConnection[Any]:
    """One autocommit connection, or a StoreError that says what is wrong."""
    try:
        return await psycopg.AsyncConnection.connect(url, autocommit=True,
                                                     connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as e:
        text = " ".join(str(e).split())
        hint = _hint(text)
        raise StoreError(f"cannot connect to PostgreSQL store {redact(url)}: {text}"
                         + (f" ({hint})" if hint else "")) from e


async def schema_state(conn: psycopg.AsyncConnection[Any]) -> tuple[int, bool]:
    """(applied version, whether the schema holds none of our tables)."""
    cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL, "
                             "to_regclass('tasks') IS NULL")
    row = await cur.fetchone()
    assert row is not None
    has_ledger, no_tasks = bool(row[0]), bool(row[1])
    if not has_ledger:
        return 0, no_tasks
    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), False


async def require_schema(conn: psycopg.AsyncConnection[Any], where: str) -> None:
    """Fail with a message when no schema on the search_path exists (nowhere to create)."""
    cur = await conn.execute("SELECT current_schema(), current_setting('search_path')")
    row = await cur.fetchone()
    assert row is not None
    if row[0] is None:
        raise SchemaError(f"store {where}: no schema on its search_path ({row[1]}) exists: "
                          "create it (CREATE SCHEMA …) or fix the URL's options")


async def migrate(conn: psycopg.AsyncConnection[Any], where: str) -> tuple[int, int]:
    """Apply pending migrations, each in its own transaction; (before, after)."""
    known = migrations.latest(KIND)
    first: int | None = None
    await require_schema(conn, where)
    while True:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            current, empty = await schema_state(conn)
            first = current if first is None else first
            if current == 0 and not empty:
                raise SchemaError(f"store {where} has a 'tasks' table but no schema_migrations:"
                                  " it is not a Cortex schema this release knows")
            if current > known:
                raise SchemaError(migrations.ahead_message(where, current, known))
            if current == known:
                # The stored functions live in one file, re-applied here (idempotent).
                await conn.execute(migrations.functions(KIND).encode())
                return first, known
            m = migrations.pending(KIND, current)[0]
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
                "name text NOT NULL, applied_ms bigint NOT NULL)")
            await conn.execute(m.sql.encode())
            await conn.execute("INSERT INTO schema_migrations VALUES (%s, %s, %s)",
                               (m.version, m.name, int(time.time() * 1000)))


async def check(url: str) -> str:
    """Connect and compare the schema with this release's; a line if fine, else raise."""
    conn = await connect(url)
    try:
        await require_schema(conn, redact(url))
        current, empty = await schema_state(conn)
    except psycopg.Error as e:
        raise StoreError(f"store {redact(url)}: cannot read its schema: {e}") from e
    finally:
        await conn.close()
    known = migrations.latest(KIND)
    where = redact(url)
    if current > known:
        raise SchemaError(migrations.ahead_message(where, current, known))
    if current == 0 and empty:
        return (f"store {where}: reachable, empty database (cortexd will create schema "
                f"version {known} at first start)")
    if current == 0:
        raise SchemaError(f"store {where} has a 'tasks' table but no schema_migrations")
    if current < known:
        raise SchemaError(migrations.behind_message(where, current, known, where))
    return f"store {where}: reachable, schema version {current} (current)"
