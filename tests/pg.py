"""The PostgreSQL server the store tests use: 127.0.0.1:5432, user postgres, db test.

Each test gets its own schema (``search_path`` in the URL), dropped afterwards.
Unreachable server: the test skips on a laptop, and fails when ``CI`` is set
(STYLE.md: a service-backed test may skip without the service, never in CI).
"""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG_ADMIN_URL = os.environ.get("CORTEX_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _admin():  # type: ignore[no-untyped-def]
    import psycopg

    try:
        return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as e:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required in CI: {e}")
        pytest.skip(f"PostgreSQL at {PG_ADMIN_URL} is unreachable: {e}")


def schema_url(schema: str) -> str:
    sep = "&" if "?" in PG_ADMIN_URL else "?"
    return f"{PG_ADMIN_URL}{sep}options=-csearch_path%3D{schema}"


@contextmanager
def pg_schema() -> Iterator[str]:
    """A fresh, empty schema; yields a store URL that uses it."""
    schema = f"cortex_test_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema_url(schema)
    finally:
        with _admin() as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
