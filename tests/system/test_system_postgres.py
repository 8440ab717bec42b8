"""cortexd on a PostgreSQL store: a task end to end, and what a bad store looks like.

Uses the server at 127.0.0.1:5432 (tests/pg.py), one fresh schema per test via
the URL's ``search_path``. Skips without the server, fails without it in CI.
"""

import subprocess

import psycopg
import pytest

from cortexd.store.migrations import latest
from examples.localfleet import Ctl, binary
from tests.pg import pg_schema

pytestmark = pytest.mark.system


def run(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*binary(name), *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_echo_on_a_postgresql_store(fleet):
    with pg_schema() as url:
        hub = fleet.hub(extra_args=["--store", url])  # an empty schema: created at start
        fleet.nodes(hub, 2)
        ctl = Ctl(hub)
        result = ctl("submit", "--follow", "--", "echo hello from postgres")
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"hello from postgres\r\n"
        (task,) = ctl.json("tasks")
        assert (task["state"], task["output_bytes"]) == ("SUCCEEDED", len(result.stdout))
        hub.stop()
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT from_state, to_state FROM transitions "
                                "WHERE accepted ORDER BY id").fetchall()
            (data,) = conn.execute("SELECT string_agg(data, ''::bytea ORDER BY off) "
                                   "FROM output").fetchone()
        # A task that ends within the node's fold window sends no Started (issue 9).
        assert rows in ([("QUEUED", "ASSIGNED"), ("ASSIGNED", "RUNNING"),
                         ("RUNNING", "SUCCEEDED")],
                        [("QUEUED", "ASSIGNED"), ("ASSIGNED", "SUCCEEDED")]), rows
        assert bytes(data) == result.stdout


def test_check_config_and_migrate_say_what_is_wrong(tmp_path):
    flags = ["--insecure-loopback", "--state-dir", str(tmp_path / "s"), "--check-config"]
    r = run("cortexd", *flags, "--store", "postgresql://postgres@127.0.0.1:1/test")
    assert r.returncode == 2 and "nothing listens there" in r.stderr, r.stderr
    with pg_schema() as url:
        r = run("cortexd", *flags, "--store", url)
        assert r.returncode == 0 and "empty database" in r.stdout, r.stderr
        r = run("cortexctl", "db", "migrate", "--store", url)
        assert r.returncode == 0 and f"version 0 to {latest('pg')}" in r.stdout, r.stderr
        r = run("cortexd", *flags, "--store", url)
        assert r.returncode == 0 and f"version {latest('pg')} (current)" in r.stdout, r.stderr
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO schema_migrations VALUES (%s, 'future', 0)",
                         (latest("pg") + 1,))
        r = run("cortexd", *flags, "--store", url)
        future = f"schema version {latest('pg') + 1}, newer than"
        assert r.returncode == 2 and future in r.stderr, r.stderr
        # The hub itself refuses to start on it, with the same message and exit code 2.
        r = run("cortexd", *flags[:-1], "--store", url, "--shards", "1",
                "--node-listen", "127.0.0.1:0", "--control-listen", "127.0.0.1:0")
        future = f"schema version {latest('pg') + 1}, newer than"
        assert r.returncode == 2 and future in r.stderr, r.stderr
        r = run("cortexctl", "db", "migrate", "--store", url)
        assert r.returncode == 1 and "newer than this cortexd" in r.stderr, r.stderr
