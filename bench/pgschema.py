"""A PostgreSQL schema made for one bench run and dropped after (``CORTEX_BENCH_PG``)."""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

PG = os.environ.get("CORTEX_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


@contextmanager
def pg_schema() -> Iterator[str]:
    """Yields a store URL whose search_path is a fresh schema."""
    schema = f"cortex_bench_{uuid.uuid4().hex[:10]}"
    sep = "&" if "?" in PG else "?"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
