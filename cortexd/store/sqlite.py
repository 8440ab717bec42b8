"""The embedded store: SQLite in WAL mode, one connection on one writer thread.

Every call runs on a single dedicated thread (SQLite connections are not to be
shared across threads, and one writer is what WAL allows anyway), so the
control process's event loop never blocks on disk. Each public method is one
transaction. The schema is versioned; a database written by a newer or unknown
schema is refused at open with a clear message.
"""

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from cortexd.lifecycle import State, sources
from cortexd.store.base import NodeRow, StaleWrite, StoreError, TaskRow, TransitionRow

T = TypeVar("T")
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY, session_epoch INTEGER NOT NULL, labels TEXT NOT NULL,
    capacity INTEGER NOT NULL, agent_version TEXT NOT NULL, shard INTEGER NOT NULL,
    attached INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, command TEXT NOT NULL, state TEXT NOT NULL,
    attempt INTEGER NOT NULL, node_id TEXT NOT NULL, node_epoch INTEGER NOT NULL,
    env TEXT NOT NULL, cwd TEXT NOT NULL, timeout_s INTEGER NOT NULL, selector TEXT NOT NULL,
    node_pin TEXT NOT NULL, idempotency_key TEXT, tenant TEXT NOT NULL, exit_code INTEGER,
    reason TEXT NOT NULL, output_bytes INTEGER NOT NULL, cancel_requested INTEGER NOT NULL,
    created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS tasks_idem ON tasks (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_state ON tasks (state, created_ms);
CREATE INDEX IF NOT EXISTS tasks_node ON tasks (node_id, state);
CREATE TABLE IF NOT EXISTS attempts (
    task_id TEXT NOT NULL, attempt INTEGER NOT NULL, node_id TEXT NOT NULL,
    node_epoch INTEGER NOT NULL, state TEXT NOT NULL, exit_code INTEGER,
    output_bytes INTEGER NOT NULL DEFAULT 0, started_ms INTEGER NOT NULL,
    finished_ms INTEGER, PRIMARY KEY (task_id, attempt));
CREATE TABLE IF NOT EXISTS output (
    task_id TEXT NOT NULL, attempt INTEGER NOT NULL, off INTEGER NOT NULL,
    data BLOB NOT NULL, PRIMARY KEY (task_id, attempt, off));
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL, attempt INTEGER NOT NULL,
    from_state TEXT NOT NULL, to_state TEXT NOT NULL, node_epoch INTEGER NOT NULL,
    accepted INTEGER NOT NULL, at_ms INTEGER NOT NULL, reason TEXT NOT NULL);
"""

_TASK_COLS = ("task_id, command, state, attempt, node_id, node_epoch, env, cwd, timeout_s, "
              "selector, node_pin, idempotency_key, tenant, exit_code, reason, output_bytes, "
              "cancel_requested, created_ms, updated_ms")


def _task(row: tuple[Any, ...]) -> TaskRow:
    return TaskRow(
        task_id=row[0], command=row[1], state=State(row[2]), attempt=row[3], node_id=row[4],
        node_epoch=row[5], env=json.loads(row[6]), cwd=row[7], timeout_s=row[8],
        selector=json.loads(row[9]), node_pin=row[10], idempotency_key=row[11] or "",
        tenant=row[12], exit_code=row[13], reason=row[14], output_bytes=row[15],
        cancel_requested=bool(row[16]), created_ms=row[17], updated_ms=row[18],
    )


def _node(row: tuple[Any, ...]) -> NodeRow:
    return NodeRow(node_id=row[0], session_epoch=row[1], labels=json.loads(row[2]),
                   capacity=row[3], agent_version=row[4], shard=row[5],
                   attached=bool(row[6]), last_seen_ms=row[7])


class SQLiteStore:
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._db: sqlite3.Connection | None = None

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

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                       (SCHEMA_VERSION,))
            db.execute("INSERT OR IGNORE INTO meta VALUES ('epoch', 0)")
            (version,) = db.execute(
                "SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.Error as e:
            raise StoreError(f"cannot open SQLite store {self.path}: {e}") from e
        if version != SCHEMA_VERSION:
            db.close()
            raise StoreError(f"store {self.path} has schema version {version}; this cortexd "
                             f"knows version {SCHEMA_VERSION}")
        self._db = db

    async def close(self) -> None:
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
            return [_node(r) for r in self.db.execute("SELECT * FROM nodes ORDER BY node_id")]
        return await self._run(q)

    # -- tasks ------------------------------------------------------------------

    async def create_task(self, task: TaskRow) -> tuple[TaskRow, bool]:
        def q() -> tuple[TaskRow, bool]:
            if task.idempotency_key:
                row = self.db.execute(
                    f"SELECT {_TASK_COLS} FROM tasks WHERE tenant=? AND idempotency_key=?",
                    (task.tenant, task.idempotency_key)).fetchone()
                if row is not None:
                    return _task(row), False
            self.db.execute(
                f"INSERT INTO tasks ({_TASK_COLS}) VALUES ({','.join('?' * 19)})",
                (task.task_id, task.command, task.state.value, task.attempt, task.node_id,
                 task.node_epoch, json.dumps(task.env), task.cwd, task.timeout_s,
                 json.dumps(task.selector), task.node_pin, task.idempotency_key or None,
                 task.tenant, task.exit_code, task.reason, task.output_bytes,
                 int(task.cancel_requested), task.created_ms, task.updated_ms))
            return task, True
        return await self._run(q)

    def _get(self, task_id: str) -> TaskRow | None:
        row = self.db.execute(f"SELECT {_TASK_COLS} FROM tasks WHERE task_id=?",
                              (task_id,)).fetchone()
        return None if row is None else _task(row)

    async def get_task(self, task_id: str) -> TaskRow | None:
        return await self._run(self._get, task_id)

    async def list_tasks(self, state: State | None = None, node_id: str = "",
                         limit: int = 100) -> list[TaskRow]:
        def q() -> list[TaskRow]:
            where, args = [], []
            if state is not None:
                where.append("state=?")
                args.append(state.value)
            if node_id:
                where.append("node_id=?")
                args.append(node_id)
            sql = f"SELECT {_TASK_COLS} FROM tasks"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY created_ms DESC, task_id LIMIT ?"
            return [_task(r) for r in self.db.execute(sql, (*args, limit))]
        return await self._run(q)

    async def tasks_in(self, states: frozenset[State], node_id: str = "") -> list[TaskRow]:
        def q() -> list[TaskRow]:
            marks = ",".join("?" * len(states))
            args: list[str] = [s.value for s in states]
            sql = f"SELECT {_TASK_COLS} FROM tasks WHERE state IN ({marks})"
            if node_id:
                sql += " AND node_id=?"
                args.append(node_id)
            return [_task(r) for r in self.db.execute(sql + " ORDER BY created_ms, task_id",
                                                      args)]
        return await self._run(q)

    async def count_in(self, states: frozenset[State]) -> int:
        def q() -> int:
            marks = ",".join("?" * len(states))
            row = self.db.execute(f"SELECT count(*) FROM tasks WHERE state IN ({marks})",
                                  [s.value for s in states]).fetchone()
            return int(row[0])
        return await self._run(q)

    async def transition(
        self,
        task_id: str,
        *,
        attempt: int,
        node_epoch: int,
        to: State,
        new_attempt: bool = False,
        node_id: str | None = None,
        new_node_epoch: int | None = None,
        exit_code: int | None = None,
        reason: str = "",
        now_ms: int,
    ) -> TaskRow:
        return await self._run(self._transition, task_id, attempt, node_epoch, to, new_attempt,
                               node_id, new_node_epoch, exit_code, reason, now_ms)

    def _transition(self, task_id: str, attempt: int, node_epoch: int, to: State,
                    new_attempt: bool, node_id: str | None, new_node_epoch: int | None,
                    exit_code: int | None, reason: str, now_ms: int) -> TaskRow:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            current = self._get(task_id)
            if current is None:
                raise StaleWrite(f"task {task_id} does not exist")
            allowed = sources(to)
            ok = (current.attempt == attempt and current.node_epoch == node_epoch
                  and current.state in allowed)
            if not ok:
                db.execute("INSERT INTO transitions (task_id, attempt, from_state, to_state, "
                           "node_epoch, accepted, at_ms, reason) VALUES (?,?,?,?,?,0,?,?)",
                           (task_id, attempt, current.state.value, to.value, node_epoch, now_ms,
                            f"stale: task is {current.state.value} attempt {current.attempt} "
                            f"epoch {current.node_epoch}"))
                db.execute("COMMIT")
                raise StaleWrite(
                    f"task {task_id}: {current.state.value}/attempt {current.attempt}/epoch "
                    f"{current.node_epoch}, writer expected attempt {attempt} epoch {node_epoch}"
                    f" and a state in {sorted(s.value for s in allowed)}")
            nxt_attempt = attempt + 1 if new_attempt else attempt
            nxt_node = current.node_id if node_id is None else node_id
            nxt_epoch = node_epoch if new_node_epoch is None else new_node_epoch
            out_bytes = 0 if new_attempt else current.output_bytes
            if to is State.QUEUED:
                nxt_node, nxt_epoch = "", 0
            db.execute(
                "UPDATE tasks SET state=?, attempt=?, node_id=?, node_epoch=?, exit_code=?, "
                "reason=?, output_bytes=?, updated_ms=? WHERE task_id=?",
                (to.value, nxt_attempt, nxt_node, nxt_epoch, exit_code, reason, out_bytes,
                 now_ms, task_id))
            if new_attempt:
                db.execute("INSERT INTO attempts (task_id, attempt, node_id, node_epoch, state, "
                           "started_ms) VALUES (?,?,?,?,?,?)",
                           (task_id, nxt_attempt, nxt_node, nxt_epoch, to.value, now_ms))
            elif attempt > 0:
                db.execute("UPDATE attempts SET state=?, exit_code=?, node_epoch=?, "
                           "finished_ms=? WHERE task_id=? AND attempt=?",
                           (to.value, exit_code, nxt_epoch, now_ms if to.terminal else None,
                            task_id, attempt))
            db.execute("INSERT INTO transitions (task_id, attempt, from_state, to_state, "
                       "node_epoch, accepted, at_ms, reason) VALUES (?,?,?,?,?,1,?,?)",
                       (task_id, nxt_attempt, current.state.value, to.value, nxt_epoch, now_ms,
                        reason))
            db.execute("COMMIT")
        except StaleWrite:
            raise
        except BaseException:
            db.execute("ROLLBACK")
            raise
        row = self._get(task_id)
        assert row is not None
        return row

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

    async def append_output(self, task_id: str, attempt: int, node_epoch: int, offset: int,
                            data: bytes) -> tuple[int, int]:
        """Append at the durable end; return (end before, end after).

        Bytes below the current end are duplicates of a replay and are dropped; a
        chunk starting past the end is a gap and is refused (the node resends from
        the acknowledged offset).
        """
        return await self._run(self._append, task_id, attempt, node_epoch, offset, data)

    def _append(self, task_id: str, attempt: int, node_epoch: int, offset: int,
                data: bytes) -> tuple[int, int]:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT output_bytes FROM tasks WHERE task_id=? AND attempt=? "
                             "AND node_epoch=?", (task_id, attempt, node_epoch)).fetchone()
            if row is None:
                db.execute("COMMIT")
                raise StaleWrite(f"output for {task_id}/{attempt} from epoch {node_epoch} "
                                 "is stale")
            end = int(row[0])
            if offset > end or offset + len(data) <= end:
                db.execute("COMMIT")
                return end, end
            chunk = data[end - offset:]
            db.execute("INSERT INTO output VALUES (?,?,?,?)", (task_id, attempt, end, chunk))
            new_end = end + len(chunk)
            now = int(time.time() * 1000)
            db.execute("UPDATE tasks SET output_bytes=?, updated_ms=? WHERE task_id=?",
                       (new_end, now, task_id))
            db.execute("UPDATE attempts SET output_bytes=? WHERE task_id=? AND attempt=?",
                       (new_end, task_id, attempt))
            db.execute("COMMIT")
            return end, new_end
        except StaleWrite:
            raise
        except BaseException:
            db.execute("ROLLBACK")
            raise

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
                   "reason FROM transitions")
            args: tuple[str, ...] = ()
            if task_id is not None:
                sql += " WHERE task_id=?"
                args = (task_id,)
            return [TransitionRow(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7])
                    for r in self.db.execute(sql + " ORDER BY id", args)]
        return await self._run(q)
