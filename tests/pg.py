"""The PostgreSQL server the store tests use: 127.0.0.1:5432, user postgres, db test.

Each test gets its own schema (``search_path`` in the URL), dropped afterwards.
Unreachable server: the test skips on a laptop, and fails when ``CI`` is set
(STYLE.md: a service-backed test may skip without the service, never in CI).

``server_down`` stops the local cluster (``pg_ctlcluster``, fast shutdown: every
client connection is cut) for a fault test and always starts it again; other
tests share the server, so keep the outage to seconds.
"""

import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


def _unavailable(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{why} (required in CI)")
    pytest.skip(why)


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


def _cluster() -> list[str]:
    """``pg_ctlcluster`` arguments naming the local cluster (version, "main")."""
    versions = sorted(p.name for p in Path("/etc/postgresql").glob("*")) if Path(
        "/etc/postgresql").is_dir() else []
    if shutil.which("pg_ctlcluster") is None or not versions:
        _unavailable("no local PostgreSQL cluster to stop and start (pg_ctlcluster)")
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main"]


def ctl_cluster(action: str) -> None:
    r = subprocess.run([*_cluster(), action], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"pg_ctlcluster {action} exited {r.returncode}: {r.stderr.strip()}")


def wait_accepting(timeout_s: float = 30.0) -> float:
    """Wait until the server accepts a connection; return time.monotonic() then."""
    import psycopg

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with psycopg.connect(PG_ADMIN_URL, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return time.monotonic()
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def server_down() -> Iterator[None]:
    """Stop the server for the body of the ``with`` (fast shutdown), then start it again
    whatever happens."""
    _cluster()
    ctl_cluster("stop")
    try:
        yield
    finally:
        ctl_cluster("start")


def committed(url: str) -> int:
    """Transitions recorded so far (accepted or refused)."""
    import psycopg

    with psycopg.connect(url, connect_timeout=2) as conn:
        row = conn.execute("SELECT count(*) FROM transitions").fetchone()
    return int(row[0]) if row else 0


class ServerReturn(threading.Thread):
    """Polls a stopped server: when it first answers (t_up, and the transitions
    committed so far), then when the first transition after that commits."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True, name="pg-return")
        self.url = url
        self.t_up = self.t_up_wall = self.t_resumed = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        from psycopg import OperationalError

        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    at_return = committed(self.url)
                    break
                except OperationalError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
            self.t_up, self.t_up_wall = time.monotonic(), time.time()
            while committed(self.url) <= at_return:
                if time.monotonic() > deadline + 30:
                    raise TimeoutError("no transition committed after the server returned")
                time.sleep(0.02)
            self.t_resumed = time.monotonic()
        except BaseException as e:  # surfaced by the test
            self.error = e
