"""The workspaces' durable records (cortexd/workspaces/records.py) on both backends.

The SQL is written once for SQLite and PostgreSQL; this runs every statement on each
(PostgreSQL at 127.0.0.1:5432, tests/pg.py: skipped on a laptop without it, failed in
CI), with the schema the store's own migrations made.
"""

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from cortex.wsmerge import DIR, FILE, LINK, Entry
from cortexd.store import migrate_store
from cortexd.workspaces.records import AttachmentRow, ConflictRow, WorkspaceRecords
from tests.pg import pg_schema

Body = Callable[[WorkspaceRecords], Awaitable[None]]


def run(url: str, body: Body) -> None:
    async def main() -> None:
        await migrate_store(url)
        records = WorkspaceRecords(url)
        await records.open()
        try:
            await body(records)
        finally:
            await records.close()

    asyncio.run(main())


def test_workspaces_and_attachments_round_trip(url: str) -> None:
    async def body(r: WorkspaceRecords) -> None:
        assert await r.create("default", "w1", 10) is True
        assert await r.create("default", "w1", 11) is False  # exists: kept as it was
        assert await r.create("acme", "w1", 12) is True  # another owner's
        assert await r.workspaces() == [("acme", "w1", 12), ("default", "w1", 10)]
        await r.attach(AttachmentRow("default", "w1", "n1", "/srv/a", 20, 0, 0))
        await r.attach(AttachmentRow("default", "w1", "n2", "/srv/b", 21, 0, 0))
        await r.attach(AttachmentRow("default", "w1", "n1", "/srv/moved", 22, 0, 0))
        got = await r.attachments()
        assert [(a.node_id, a.path, a.attached_ms) for a in got] == [
            ("n1", "/srv/moved", 20), ("n2", "/srv/b", 21)]
        await r.detach("default", "w1", "n2")
        assert [a.node_id for a in await r.attachments()] == ["n1"]

    run(url, body)


def test_the_synced_state_is_written_as_a_diff_with_the_round(url: str) -> None:
    async def body(r: WorkspaceRecords) -> None:
        await r.create("default", "w1", 1)
        await r.attach(AttachmentRow("default", "w1", "n1", "/srv/a", 1, 0, 0))
        base = {"a.txt": Entry(FILE, "a" * 64), "run.sh": Entry(FILE, "b" * 64, True),
                "src": Entry(DIR), "link": Entry(LINK, "src/a.txt")}
        await r.save_synced("default", "w1", "n1", base, [], 100)
        assert await r.synced("default", "w1", "n1") == base
        await r.save_synced("default", "w1", "n1", {"a.txt": Entry(FILE, "c" * 64)},
                            ["link", "never-there"], 200)
        now = await r.synced("default", "w1", "n1")
        assert now == {"a.txt": Entry(FILE, "c" * 64), "run.sh": Entry(FILE, "b" * 64, True),
                       "src": Entry(DIR)}
        (att,) = await r.attachments()
        assert (att.synced_ms, att.rounds) == (200, 2)
        assert await r.synced("default", "w1", "n2") == {}  # another attachment's base
        await r.detach("default", "w1", "n1")  # the base leaves with the attachment
        assert await r.synced("default", "w1", "n1") == {}

    run(url, body)


def test_conflicts_are_numbered_listed_and_resolved_once(url: str) -> None:
    async def body(r: WorkspaceRecords) -> None:
        hub, node = Entry(FILE, "1" * 64), Entry(FILE, "2" * 64, True)
        ids = [await r.add_conflict(ConflictRow(0, "default", w, "n1", p, None, hub, node,
                                                 5, 0, ""))
               for w, p in (("w1", "a.txt"), ("w1", "b.txt"), ("w2", "c.txt"))]
        assert len(set(ids)) == 3 and ids == sorted(ids)
        one = (await r.conflicts("default", "w1"))[0]
        assert (one.id, one.path, one.base, one.hub, one.node) == (ids[0], "a.txt", None,
                                                                   hub, node)
        assert [c.path for c in await r.conflicts("default")] == ["a.txt", "b.txt", "c.txt"]
        assert await r.conflicts("acme") == []
        await r.resolve_conflict("default", ids[0], "node", 9)
        await r.resolve_conflict("default", ids[0], "hub", 10)  # already resolved: no-op
        assert [c.path for c in await r.conflicts("default", "w1")] == ["b.txt"]
        done = await r.conflicts("default", "w1", include_resolved=True)
        assert [(c.path, c.resolution, c.resolved_ms) for c in done] == [
            ("a.txt", "node", 9), ("b.txt", "", 0)]
        assert [c.id for c in await r.conflicts_all_open()] == ids[1:]

    run(url, body)


def test_a_postgresql_connection_the_server_dropped_is_replaced() -> None:
    import psycopg

    with pg_schema() as url:
        async def body(r: WorkspaceRecords) -> None:
            await r.create("default", "w1", 1)
            pid = r._db.info.backend_pid
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            with pytest.raises(psycopg.OperationalError):
                await r.workspaces()  # this call finds it dropped (never retried blindly)
            assert await r.workspaces() == [("default", "w1", 1)]  # a new connection
            assert r._db.info.backend_pid != pid

        run(url, body)
