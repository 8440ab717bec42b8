"""The embedded store: SQLite in WAL mode, one connection on one writer thread.

Every call runs on a single dedicated thread (SQLite connections are not to be
shared across threads, and one writer is what WAL allows anyway), so the
control process's event loop never blocks on disk. Each public method is one
transaction, except the hot path's calls — output appends, transitions, task
inserts and ``get_task`` — which go through the group commit writer: one
``BEGIN IMMEDIATE … COMMIT`` (and one thread hop) per batch, in submission order,
so a read queued after a write sees it (the batch's writes: ``sqlitewrites.py``).
A result (read or write) is handed out only after its batch committed.

The schema is versioned by the files in ``migrations/sqlite``; the store
migrates itself at open (embedded means zero setup) and refuses a database
written by a newer schema. Stores from before versioned migrations recorded
``meta.schema_version = 1``; that is read as version 1.
"""

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from cortexd.lifecycle import State
from cortexd.store import migrations
from cortexd.store.base import NodeRow, StoreError, TaskRow, TransitionRow
from cortexd.store.groupcommit import GroupCommit
from cortexd.store.migrations import SchemaError
from cortexd.store.monitoring import MonitorTables
from cortexd.store.rows import (
    NODE_COLS,
    TASK_COLS,
    BatchedWrites,
    node_from_row,
    placing,
    task_from_row,
)
from cortexd.store.sqlitewrites import Create, Read, SQLiteOp, SQLiteResult, SQLiteWrites

T = TypeVar("T")
KIND = "sqlite"


def schema_version(db: sqlite3.Connection) -> int:
    """The highest migration applied to ``db`` (0 for an empty database)."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "schema_migrations" in tables:
        row = db.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        return int(row[0])
    if "meta" in tables:
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is not None:
            return int(row[0])
    return 0


def migrate(db: sqlite3.Connection, where: str) -> tuple[int, int]:
    """Apply the pending migrations to ``db``; return (version before, version after)."""
    current = schema_version(db)
    known = migrations.latest(KIND)
    if current > known:
        raise SchemaError(migrations.ahead_message(where, current, known))
    now = int(time.time() * 1000)
    ledger = ("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
              "name TEXT NOT NULL, applied_ms INTEGER NOT NULL);")
    if current and not db.execute("SELECT 1 FROM sqlite_master WHERE "
                                  "name='schema_migrations'").fetchone():
        # A store from before the ledger: record what it already has.
        adopted = "".join(f"INSERT INTO schema_migrations VALUES ({m.version}, '{m.name}', {now});"
                          for m in migrations.load(KIND)[:current])
        _script(db, f"BEGIN IMMEDIATE; {ledger} {adopted} COMMIT;")
    for m in migrations.pending(KIND, current):
        _script(db, f"BEGIN IMMEDIATE; {ledger}\n{m.sql}\n;INSERT INTO schema_migrations "
                    f"VALUES ({m.version}, '{m.name}', {now}); COMMIT;")
    return current, known


def _script(db: sqlite3.Connection, sql: str) -> None:
    try:
        db.executescript(sql)
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class SQLiteStore(SQLiteWrites, BatchedWrites, MonitorTables):
    def __init__(self, path: str, *, batch_max: int = 512, flush_delay_ms: float = 0.0) -> None:
        self.path = Path(path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._db: sqlite3.Connection | None = None
        self.replays = 0  # writes whose retry found them already committed
        # Typed Any: it takes Create and Read besides the WriteOps BatchedWrites sends.
        self.writer: GroupCommit[Any, Any] = GroupCommit(
            self._flush, max_batch=batch_max, delay_s=flush_delay_ms / 1000)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "store is not open"
        return self._db

    # -- lifecycle ------------------------------------------------------------

    async def open(self) -> None:
        await self._run(self._open)
        self.writer.start()

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"cannot open SQLite store {self.path}: {e}") from e
        try:
            migrate(db, str(self.path))
        except SchemaError:
            db.close()
            raise
        except sqlite3.Error as e:
            db.close()
            raise StoreError(f"cannot migrate SQLite store {self.path}: {e}") from e
        self._db = db

    async def close(self) -> None:
        await self.writer.close()
        if self._db is not None:
            await self._run(self.db.close)
            self._db = None
        self._pool.shutdown(wait=True)

    # -- epochs and nodes -------------------------------------------------------

    async def mint_epoch(self) -> int:
        def q() -> int:
            row = self.db.execute(
                "UPDATE meta SET value = value + 1 WHERE key='epoch' RETURNING value").fetchone()
            return int(row[0])
        return await self._run(q)

    async def node_attached(self, node: NodeRow) -> None:
        def q() -> None:
            self.db.execute(
                "INSERT INTO nodes VALUES (?,?,?,?,?,?,1,?) ON CONFLICT(node_id) DO UPDATE SET "
                "session_epoch=excluded.session_epoch, labels=excluded.labels, "
                "capacity=excluded.capacity, agent_version=excluded.agent_version, "
                "shard=excluded.shard, attached=1, last_seen_ms=excluded.last_seen_ms "
                "WHERE excluded.session_epoch > nodes.session_epoch",
                (node.node_id, node.session_epoch, json.dumps(node.labels), node.capacity,
                 node.agent_version, node.shard, node.last_seen_ms))
        await self._run(q)

    async def node_detached(self, node_id: str, epoch: int, now_ms: int) -> bool:
        def q() -> bool:
            cur = self.db.execute(
                "UPDATE nodes SET attached=0, last_seen_ms=? WHERE node_id=? AND session_epoch=?",
                (now_ms, node_id, epoch))
            return cur.rowcount == 1
        return await self._run(q)

    async def list_nodes(self) -> list[NodeRow]:
        def q() -> list[NodeRow]:
            return [node_from_row(r) for r in
                    self.db.execute(f"SELECT {NODE_COLS} FROM nodes ORDER BY node_id")]
        return await self._run(q)

    # -- tasks ------------------------------------------------------------------

    async def create_task(self, task: TaskRow,
                          place: tuple[str, int] | None = None) -> tuple[TaskRow, bool]:
        # Through the writer: concurrent submits share one transaction (an
        # autocommit INSERT each cost ~200 µs of the store thread here).
        result: tuple[TaskRow, bool] = await self.writer.submit(
            Create(task, None if place is None else placing(task, *place)))
        if place is not None and result[0].state is State.ASSIGNED and self.observer:
            self.observer.transitioned(result[0])
        return result

    async def get_task(self, task_id: str) -> TaskRow | None:
        # Through the writer: it shares a batch (and thread hop) with the writes
        # queued with it, and sees every write submitted before it.
        result: TaskRow | None = await self.writer.submit(Read(task_id))
        return result

    async def list_tasks(self, state: State | None = None, node_id: str = "",
                         limit: int = 100,
                         before: tuple[int, str] | None = None) -> list[TaskRow]:
        def q() -> list[TaskRow]:
            where: list[str] = []
            args: list[Any] = []
            if before is not None:
                where.append("(created_ms < ? OR (created_ms = ? AND task_id > ?))")
                args += [before[0], before[0], before[1]]
            if state is not None:
                where.append("state=?")
                args.append(state.value)
            if node_id:
                where.append("node_id=?")
                args.append(node_id)
            sql = f"SELECT {TASK_COLS} FROM tasks"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY created_ms DESC, task_id LIMIT ?"
            return [task_from_row(r) for r in self.db.execute(sql, (*args, limit))]
        return await self._run(q)

    async def tasks_in(self, states: frozenset[State], node_id: str = "") -> list[TaskRow]:
        def q() -> list[TaskRow]:
            marks = ",".join("?" * len(states))
            args: list[str] = [s.value for s in states]
            sql = f"SELECT {TASK_COLS} FROM tasks WHERE state IN ({marks})"
            if node_id:
                sql += " AND node_id=?"
                args.append(node_id)
            return [task_from_row(r)
                    for r in self.db.execute(sql + " ORDER BY created_ms, task_id", args)]
        return await self._run(q)

    async def count_in(self, states: frozenset[State]) -> int:
        def q() -> int:
            marks = ",".join("?" * len(states))
            row = self.db.execute(f"SELECT count(*) FROM tasks WHERE state IN ({marks})",
                                  [s.value for s in states]).fetchone()
            return int(row[0])
        return await self._run(q)

    async def rebind_epoch(self, task_id: str, attempt: int, node_id: str, epoch: int) -> bool:
        """Move a kept task to the node's new session epoch (never backwards)."""
        def q() -> bool:
            cur = self.db.execute(
                "UPDATE tasks SET node_epoch=? WHERE task_id=? AND attempt=? AND node_id=? "
                "AND node_epoch < ? AND state IN ('ASSIGNED','RUNNING')",
                (epoch, task_id, attempt, node_id, epoch))
            if cur.rowcount:
                self.db.execute("UPDATE attempts SET node_epoch=? WHERE task_id=? AND attempt=?",
                                (epoch, task_id, attempt))
            return cur.rowcount == 1
        return await self._run(q)

    async def request_cancel(self, task_id: str) -> TaskRow | None:
        def q() -> TaskRow | None:
            self.db.execute("UPDATE tasks SET cancel_requested=1 WHERE task_id=?", (task_id,))
            return self._get(task_id)
        return await self._run(q)

    # -- output -------------------------------------------------------------------

    async def read_output(self, task_id: str, attempt: int, offset: int,
                          max_bytes: int) -> bytes:
        def q() -> bytes:
            rows = self.db.execute(
                "SELECT off, data FROM output WHERE task_id=? AND attempt=? AND "
                "off + length(data) > ? ORDER BY off", (task_id, attempt, offset))
            out = bytearray()
            for start, data in rows:
                out += data[max(0, offset - start):]
                if len(out) >= max_bytes:
                    break
            return bytes(out[:max_bytes])
        return await self._run(q)

    async def transitions(self, task_id: str | None = None) -> list[TransitionRow]:
        def q() -> list[TransitionRow]:
            sql = ("SELECT task_id, attempt, from_state, to_state, node_epoch, accepted, at_ms, "
                   "reason, coalesce(write_id, ''), node_id FROM transitions")
            args: tuple[str, ...] = ()
            if task_id is not None:
                sql += " WHERE task_id=?"
                args = (task_id,)
            return [TransitionRow(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7],
                                  write_id=r[8], node_id=r[9])
                    for r in self.db.execute(sql + " ORDER BY id", args)]
        return await self._run(q)

    async def _m_all(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return await self._run(lambda: self.db.execute(sql, args).fetchall())

    # -- the group commit writer's flush (sqlitewrites.py runs it) ---------------------

    async def _flush(self, ops: Sequence[SQLiteOp]) -> list[SQLiteResult | Exception]:
        return await self._run(self._flush_sync, ops)
