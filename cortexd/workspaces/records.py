"""The workspaces' durable records (migration 0010), in SQLite or PostgreSQL.

Tables: ``workspaces`` (owner, name), ``workspace_attachments`` (node, path, the last
round), ``workspace_synced`` (per attachment: path -> kind, digest, mode, link target: the
base of the next three-way merge) and ``workspace_conflicts`` (events, open until
resolved). The SQL is written once with ``%s`` placeholders; both backends run it on
one DB-API connection on one thread of their own (the SQLite file is the hub's store,
WAL allows the second connection; PostgreSQL is the cluster's), so the event loop
never waits on the database.

A PostgreSQL connection the server dropped is replaced at the next call (the call that
found it broken fails), so the workspaces outlive a database restart.

The synced state is written as a diff (rows upserted, rows deleted) in one transaction
with the attachment's round counter, so after a crash it is either the old base or the
new one, never a mix.
"""

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cortex.wsmerge import FILE, LINK, Entry

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AttachmentRow:
    owner: str
    workspace: str
    node_id: str
    path: str
    attached_ms: int
    synced_ms: int
    rounds: int


@dataclass(frozen=True, slots=True)
class ConflictRow:
    id: int
    owner: str
    workspace: str
    node_id: str
    path: str
    base: Entry | None
    hub: Entry | None
    node: Entry | None
    created_ms: int
    resolved_ms: int
    resolution: str


def entry_json(e: Entry | None) -> str:
    return "" if e is None else json.dumps([e.kind, e.digest, e.executable])


def entry_from(s: str) -> Entry | None:
    if not s:
        return None
    kind, digest, executable = json.loads(s)
    return Entry(str(kind), str(digest), bool(executable))


def _synced_row(e: Entry) -> tuple[str, str, int, str]:
    if e.kind == LINK:
        return e.kind, "", 0o777, e.digest
    if e.kind == FILE:
        return e.kind, e.digest, 0o755 if e.executable else 0o644, ""
    return e.kind, "", 0o755, ""


ATT_COLS = "owner, workspace, node_id, path, attached_ms, synced_ms, rounds"
CONFLICT_COLS = ("id, owner, workspace, node_id, path, base, hub, node, created_ms, "
                 "resolved_ms, resolution")


class WorkspaceRecords:
    def __init__(self, url: str) -> None:
        self.url = url
        self.pg = not url.startswith("sqlite:")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="workspace-db")
        self._db: Any = None

    def _q(self, statement: str) -> str:
        return statement if self.pg else statement.replace("%s", "?")

    async def _run(self, fn: Callable[[Any], T]) -> T:
        def run() -> T:
            if self.pg:
                return self._run_pg(fn)
            with self._db:
                return fn(self._db)
        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    def _run_pg(self, fn: Callable[[Any], T]) -> T:
        """One transaction. A connection the server dropped (a restart, a terminated
        backend) fails this call and is replaced at the next: never retried here, as the
        outcome of a commit cut off is unknown (the node's round is planned again)."""
        import psycopg

        if self._db is None or self._db.closed:
            self._db = psycopg.connect(self.url, autocommit=True)
        try:
            with self._db.transaction():
                return fn(self._db.cursor())
        except psycopg.OperationalError:
            if self._db.broken or self._db.closed:
                self._db.close()
                self._db = None
            raise

    async def open(self) -> None:
        def connect() -> None:
            if self.pg:
                import psycopg

                self._db = psycopg.connect(self.url, autocommit=True)
            else:
                db = sqlite3.connect(Path(self.url.removeprefix("sqlite:///")),
                                     isolation_level=None, check_same_thread=False)
                db.execute("PRAGMA busy_timeout = 10000")
                db.isolation_level = "DEFERRED"
                self._db = db
        await asyncio.get_running_loop().run_in_executor(self._pool, connect)

    async def close(self) -> None:
        if self._db is not None:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._db.close)
            self._db = None
        self._pool.shutdown()

    # -- workspaces and attachments ------------------------------------------------
    async def create(self, owner: str, name: str, now_ms: int) -> bool:
        def run(db: Any) -> bool:
            got = db.execute(self._q("SELECT 1 FROM workspaces WHERE owner = %s AND name = %s"),
                             (owner, name)).fetchone()
            if got:
                return False
            db.execute(self._q("INSERT INTO workspaces (owner, name, created_ms) "
                               "VALUES (%s, %s, %s)"), (owner, name, now_ms))
            return True
        return await self._run(run)

    async def workspaces(self) -> list[tuple[str, str, int]]:
        rows = await self._run(lambda db: db.execute(
            "SELECT owner, name, created_ms FROM workspaces ORDER BY owner, name").fetchall())
        return [(str(o), str(n), int(c)) for o, n, c in rows]

    async def attachments(self) -> list[AttachmentRow]:
        rows = await self._run(lambda db: db.execute(
            f"SELECT {ATT_COLS} FROM workspace_attachments "
            "ORDER BY owner, workspace, node_id").fetchall())
        return [AttachmentRow(str(a), str(b), str(c), str(d), int(e), int(f), int(g))
                for a, b, c, d, e, f, g in rows]

    async def attach(self, row: AttachmentRow) -> None:
        await self._run(lambda db: db.execute(self._q(
            f"INSERT INTO workspace_attachments ({ATT_COLS}) VALUES "
            "(%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (owner, workspace, node_id) DO UPDATE "
            "SET path = excluded.path"),
            (row.owner, row.workspace, row.node_id, row.path, row.attached_ms, 0, 0)))

    async def detach(self, owner: str, workspace: str, node_id: str) -> None:
        def run(db: Any) -> None:
            for table in ("workspace_attachments", "workspace_synced"):
                db.execute(self._q(f"DELETE FROM {table} WHERE owner = %s AND workspace = %s "
                                   "AND node_id = %s"), (owner, workspace, node_id))
        await self._run(run)

    # -- the synced state (the merge's base) ---------------------------------------
    async def synced(self, owner: str, workspace: str, node_id: str) -> dict[str, Entry]:
        rows = await self._run(lambda db: db.execute(self._q(
            "SELECT path, kind, digest, mode, link_target FROM workspace_synced "
            "WHERE owner = %s AND workspace = %s AND node_id = %s"),
            (owner, workspace, node_id)).fetchall())
        out: dict[str, Entry] = {}
        for path, kind, digest, mode, target in rows:
            if kind == LINK:
                out[str(path)] = Entry(LINK, str(target))
            elif kind == FILE:
                out[str(path)] = Entry(FILE, str(digest), bool(int(mode) & 0o111))
            else:
                out[str(path)] = Entry(str(kind))
        return out

    async def save_synced(self, owner: str, workspace: str, node_id: str,
                          upserts: dict[str, Entry], deletes: list[str],
                          synced_ms: int) -> None:
        key = (owner, workspace, node_id)

        def run(db: Any) -> None:
            if deletes:
                db.executemany(self._q(
                    "DELETE FROM workspace_synced WHERE owner = %s AND workspace = %s "
                    "AND node_id = %s AND path = %s"), [(*key, p) for p in deletes])
            if upserts:
                db.executemany(self._q(
                    "INSERT INTO workspace_synced (owner, workspace, node_id, path, kind, "
                    "digest, mode, link_target) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (owner, workspace, node_id, path) DO UPDATE SET "
                    "kind = excluded.kind, digest = excluded.digest, mode = excluded.mode, "
                    "link_target = excluded.link_target"),
                    [(*key, p, *_synced_row(e)) for p, e in upserts.items()])
            db.execute(self._q(
                "UPDATE workspace_attachments SET synced_ms = %s, rounds = rounds + 1 "
                "WHERE owner = %s AND workspace = %s AND node_id = %s"), (synced_ms, *key))
        await self._run(run)

    # -- conflicts -----------------------------------------------------------------
    async def add_conflict(self, c: ConflictRow) -> int:
        def run(db: Any) -> int:
            params = (c.owner, c.workspace, c.node_id, c.path, entry_json(c.base),
                      entry_json(c.hub), entry_json(c.node), c.created_ms)
            sql = ("INSERT INTO workspace_conflicts (owner, workspace, node_id, path, base, "
                   "hub, node, created_ms) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)")
            if self.pg:
                return int(db.execute(sql + " RETURNING id", params).fetchone()[0])
            return int(db.execute(self._q(sql), params).lastrowid)
        return await self._run(run)

    async def conflicts(self, owner: str, workspace: str = "",
                        include_resolved: bool = False) -> list[ConflictRow]:
        where, params = ["owner = %s"], [owner]
        if workspace:
            where.append("workspace = %s")
            params.append(workspace)
        if not include_resolved:
            where.append("resolved_ms = 0")
        sql = self._q(f"SELECT {CONFLICT_COLS} FROM workspace_conflicts WHERE "
                      f"{' AND '.join(where)} ORDER BY id")
        rows = await self._run(lambda db: db.execute(sql, tuple(params)).fetchall())
        return [ConflictRow(int(i), str(o), str(w), str(n), str(p), entry_from(b),
                            entry_from(h), entry_from(nd), int(c), int(r), str(res))
                for i, o, w, n, p, b, h, nd, c, r, res in rows]

    async def conflicts_all_open(self) -> list[ConflictRow]:
        rows = await self._run(lambda db: db.execute(
            f"SELECT {CONFLICT_COLS} FROM workspace_conflicts WHERE resolved_ms = 0 "
            "ORDER BY id").fetchall())
        return [ConflictRow(int(i), str(o), str(w), str(n), str(p), entry_from(b),
                            entry_from(h), entry_from(nd), int(c), int(r), str(res))
                for i, o, w, n, p, b, h, nd, c, r, res in rows]

    async def resolve_conflict(self, owner: str, conflict_id: int, resolution: str,
                               now_ms: int) -> None:
        await self._run(lambda db: db.execute(self._q(
            "UPDATE workspace_conflicts SET resolved_ms = %s, resolution = %s "
            "WHERE owner = %s AND id = %s AND resolved_ms = 0"),
            (now_ms, resolution, owner, conflict_id)))

    async def conflict_digests(self) -> set[str]:
        """The file digests every conflict (open or resolved) names: their blobs stay."""
        rows = await self._run(lambda db: db.execute(
            "SELECT base, hub, node FROM workspace_conflicts").fetchall())
        return {e.digest for row in rows for e in map(entry_from, row)
                if e is not None and e.kind == FILE}
