"""Fixtures shared by the unit tests."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg import pg_schema


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URL for each backend: a fresh SQLite file, a fresh PostgreSQL schema
    (skipped without PostgreSQL, failed when CI is set: tests/pg.py)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'c.db'}"
    else:
        with pg_schema() as pg_url:
            yield pg_url
