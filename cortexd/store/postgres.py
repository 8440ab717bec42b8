"""The shared store: PostgreSQL through psycopg 3 (async) and a connection pool.

Same interface and semantics as the SQLite store (one test suite runs against
both). What differs:

- **Epochs** come from ``UPDATE cortex_epoch SET value = value + 1 RETURNING``:
  a committed row write, durable and strictly increasing across every hub that
  shares the database (the row lock orders concurrent minters).
- **Conditional writes** are the SQL functions ``cortex_transition`` and
  ``cortex_append_output`` (migrations/pg): each locks the task row
  (``SELECT … FOR UPDATE``), checks attempt, epoch and state, writes, and records
  a refused transition in ``transitions`` like an accepted one.
- **Group commit**: appends and transitions from the writer are sent as one
  pipelined transaction per batch (one round trip instead of one per row).
- **Schema**: checked at open; an empty database is migrated (first start,
  serialized by an advisory lock), a schema that is behind is refused with the
  ``cortexctl db migrate`` command to run, one that is ahead is refused
  (connecting and migrating: ``pgschema.py``).
- **Outages** (``outage.py``): every call after ``open`` is retried through a
  lost connection, a restarting server or a pool timeout, with capped jittered
  backoff, and logged once per outage. Every retried call is idempotent: reads
  and upserts by nature, ``create_task`` by its task id and idempotency key,
  the group-commit writes by their write ids (a batch whose COMMIT outcome was
  unknown is sent again whole and each write finds its own committed row).
"""

import logging
from collections.abc import Sequence
from typing import Any

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolClosed

from cortexd.lifecycle import State
from cortexd.store import migrations
from cortexd.store.base import NodeRow, StaleWrite, StoreError, TaskRow, TransitionRow
from cortexd.store.groupcommit import GroupCommit
from cortexd.store.migrations import SchemaError
from cortexd.store.monitoring import MonitorTables
from cortexd.store.outage import Outages
from cortexd.store.pgschema import (
    CONNECT_TIMEOUT_S,
    KIND,
    connect,
    migrate,
    redact,
    require_schema,
    schema_state,
)
from cortexd.store.pgwrites import statement, statements, value
from cortexd.store.rows import (
    NODE_COLS,
    TASK_COL_COUNT,
    TASK_COLS,
    Append,
    BatchedWrites,
    EndAttempt,
    Ended,
    Transition,
    WriteOp,
    WriteResult,
    node_from_row,
    placing,
    task_from_dict,
    task_from_row,
    task_params,
)

#: How long a call waits for a pooled connection before the wait counts as a failure
#: (and is retried): short, so an outage is noticed while it lasts, and a call that
#: waits on a pool that gave up reconnecting asks again soon (a new getconn grows the
#: pool): the worst case from the server's return to a commit is about this plus the
#: backoff cap plus a connect.
POOL_WAIT_S = 2.0
#: How long the pool's own reconnect attempts for a lost connection last (1 s, then 2 s
#: apart) before it drops that slot; the next call that needs a connection opens a new
#: one at once. Short, so the pool is never asleep in a long backoff when the server
#: returns: resuming is bounded by our backoff cap, not the pool's.
POOL_RECONNECT_S = 3.0
#: After close() starts, calls still failing give up this long after (the stop ladder
#: must not wait on a database that is gone).
CLOSE_RETRY_S = 5.0



def is_transient(e: BaseException) -> bool:
    """Worth retrying: the connection or the server failed, not the statement.

    psycopg's OperationalError covers a lost or refused connection (no SQLSTATE), an
    administrator shutdown or a server starting up (57P01, 57P03), and the pool's
    PoolTimeout; PoolClosed (ours: the store is closing) is not transient.
    """
    return isinstance(e, psycopg.OperationalError) and not isinstance(e, PoolClosed)


class PostgresStore(BatchedWrites, MonitorTables):
    def __init__(self, url: str, *, pool_size: int = 4, batch_max: int = 512,
                 flush_delay_ms: float = 0.0) -> None:
        self.url = url
        self.pool_size = pool_size
        self._pool: AsyncConnectionPool | None = None
        self.outages = Outages(redact(url), is_transient)
        self.replays = 0  # writes whose retry found them already committed
        self.writer: GroupCommit[WriteOp, WriteResult] = GroupCommit(
            self._flush, max_batch=batch_max, delay_s=flush_delay_ms / 1000)

    @property
    def pool(self) -> AsyncConnectionPool:
        assert self._pool is not None, "store is not open"
        return self._pool

    # -- lifecycle ------------------------------------------------------------

    async def open(self) -> None:
        where = redact(self.url)
        conn = await connect(self.url)
        try:
            await require_schema(conn, where)
            current, empty = await schema_state(conn)
            known = migrations.latest(KIND)
            if current == 0 and empty:
                await migrate(conn, where)  # first start on an empty database
            elif current > known:
                raise SchemaError(migrations.ahead_message(where, current, known))
            elif current < known:
                raise SchemaError(migrations.behind_message(where, current, known, where))
        except psycopg.Error as e:
            raise StoreError(f"store {where}: cannot check or create its schema: {e}") from e
        finally:
            await conn.close()
        # psycopg and its pool log every failed reconnect and broken pipeline; the
        # outage is logged once, by Outages.
        logging.getLogger("psycopg").setLevel(logging.ERROR)
        self._pool = AsyncConnectionPool(self.url, min_size=1, max_size=self.pool_size,
                                         kwargs={"autocommit": True}, open=False,
                                         name="cortex-store", timeout=POOL_WAIT_S,
                                         reconnect_timeout=POOL_RECONNECT_S)
        await self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        self.writer.start()

    async def close(self) -> None:
        self.outages.give_up_after(CLOSE_RETRY_S)
        try:
            await self.writer.close()
        finally:
            if self._pool is not None:
                await self._pool.close()
                self._pool = None
            o = self.outages
            self.outages.log.info("store_closed", store=o.where, outages=o.outages,
                                  retries=o.retries, replayed_writes=self.replays,
                                  batches=self.writer.batches, writes=self.writer.writes)

    @property
    def reachable(self) -> bool:
        """False from a call's first transient failure until a call succeeds again."""
        return self.outages.reachable

    async def _all(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async def q() -> list[tuple[Any, ...]]:
            async with self.pool.connection() as conn:
                cur = await conn.execute(sql, args)
                return await cur.fetchall()
        return await self.outages.call("read", q)

    async def _one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        async def q() -> tuple[Any, ...] | None:
            async with self.pool.connection() as conn:
                cur = await conn.execute(sql, args)
                return await cur.fetchone()
        return await self.outages.call(
            "write" if sql.startswith(("UPDATE", "INSERT")) else "read", q)

    async def _m_all(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return await self._all(sql.replace("?", "%s"), args)  # monitoring.py's SQL

    # -- epochs and nodes -------------------------------------------------------

    async def mint_epoch(self) -> int:
        # A retry after an unknown commit may skip a value: epochs need only increase.
        row = await self._one("UPDATE cortex_epoch SET value = value + 1 WHERE id = 1 "
                              "RETURNING value")
        assert row is not None
        return int(row[0])

    async def node_attached(self, node: NodeRow) -> None:
        await self._one(
            f"INSERT INTO nodes ({NODE_COLS}) VALUES (%s,%s,%s,%s,%s,%s,true,%s) "
            "ON CONFLICT (node_id) DO UPDATE SET "
            "session_epoch=excluded.session_epoch, labels=excluded.labels, "
            "capacity=excluded.capacity, agent_version=excluded.agent_version, "
            "shard=excluded.shard, attached=true, last_seen_ms=excluded.last_seen_ms "
            "WHERE excluded.session_epoch > nodes.session_epoch RETURNING 1",
            (node.node_id, node.session_epoch, orjson.dumps(node.labels).decode(),
             node.capacity, node.agent_version, node.shard, node.last_seen_ms))

    async def node_detached(self, node_id: str, epoch: int, now_ms: int) -> bool:
        row = await self._one("UPDATE nodes SET attached=false, last_seen_ms=%s "
                              "WHERE node_id=%s AND session_epoch=%s RETURNING 1",
                              (now_ms, node_id, epoch))
        return row is not None

    async def list_nodes(self) -> list[NodeRow]:
        return [node_from_row(r)
                for r in await self._all(f"SELECT {NODE_COLS} FROM nodes ORDER BY node_id")]

    # -- tasks ------------------------------------------------------------------

    async def create_task(self, task: TaskRow,
                          place: tuple[str, int] | None = None) -> tuple[TaskRow, bool]:
        row, created = await self.outages.call("write", lambda: self._create_task(task, place))
        if place is not None and row.state is State.ASSIGNED and self.observer:
            self.observer.transitioned(row)
        return row, created

    async def _create_task(self, task: TaskRow,
                           place: tuple[str, int] | None) -> tuple[TaskRow, bool]:
        marks = ",".join(["%s"] * TASK_COL_COUNT)
        async with self.pool.connection() as conn, conn.transaction():
            # DO NOTHING on any conflict: on the idempotency key, two hubs racing on one
            # key agree on one task; on the task id, this is a retry of our own insert
            # whose commit outcome was unknown (task ids are random, never reused).
            cur = await conn.execute(
                f"INSERT INTO tasks ({TASK_COLS}) VALUES ({marks}) ON CONFLICT DO NOTHING "
                "RETURNING task_id", task_params(task))
            if await cur.fetchone() is not None:
                if place is None:
                    return task, True
                op = placing(task, *place)  # placed in the insert's commit
                cur = await conn.execute(*statement(op))
                placed = self._result(op, value(await cur.fetchone()))
                return (placed if isinstance(placed, TaskRow) else task), True
            cur = await conn.execute(f"SELECT {TASK_COLS} FROM tasks WHERE task_id=%s",
                                     (task.task_id,))
            if (row := await cur.fetchone()) is not None:
                self.replays += 1
                return task_from_row(row), True
            cur = await conn.execute(
                f"SELECT {TASK_COLS} FROM tasks WHERE tenant=%s AND idempotency_key=%s",
                (task.tenant, task.idempotency_key))
            row = await cur.fetchone()
        if row is None:
            raise StoreError(f"task {task.task_id}: insert conflicted but no task has its key")
        return task_from_row(row), False

    async def get_task(self, task_id: str) -> TaskRow | None:
        row = await self._one(f"SELECT {TASK_COLS} FROM tasks WHERE task_id=%s", (task_id,))
        return None if row is None else task_from_row(row)

    async def list_tasks(self, state: State | None = None, node_id: str = "",
                         limit: int = 100,
                         before: tuple[int, str] | None = None) -> list[TaskRow]:
        where: list[str] = []
        args: list[Any] = []
        if before is not None:
            where.append("(created_ms < %s OR (created_ms = %s AND task_id > %s))")
            args += [before[0], before[0], before[1]]
        if state is not None:
            where.append("state=%s")
            args.append(state.value)
        if node_id:
            where.append("node_id=%s")
            args.append(node_id)
        sql = f"SELECT {TASK_COLS} FROM tasks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_ms DESC, task_id LIMIT %s"
        return [task_from_row(r) for r in await self._all(sql, (*args, limit))]

    async def tasks_in(self, states: frozenset[State], node_id: str = "") -> list[TaskRow]:
        sql = f"SELECT {TASK_COLS} FROM tasks WHERE state = ANY(%s)"
        args: list[Any] = [[s.value for s in states]]
        if node_id:
            sql += " AND node_id=%s"
            args.append(node_id)
        return [task_from_row(r)
                for r in await self._all(sql + " ORDER BY created_ms, task_id", args)]

    async def count_in(self, states: frozenset[State]) -> int:
        row = await self._one("SELECT count(*) FROM tasks WHERE state = ANY(%s)",
                              ([s.value for s in states],))
        assert row is not None
        return int(row[0])

    async def rebind_epoch(self, task_id: str, attempt: int, node_id: str, epoch: int) -> bool:
        """Move a kept task to the node's new session epoch (never backwards)."""
        async def q() -> bool:
            async with self.pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "UPDATE tasks SET node_epoch=%s WHERE task_id=%s AND attempt=%s AND "
                    "node_id=%s AND node_epoch < %s AND state IN ('ASSIGNED','RUNNING')",
                    (epoch, task_id, attempt, node_id, epoch))
                if cur.rowcount:
                    await conn.execute("UPDATE attempts SET node_epoch=%s WHERE task_id=%s "
                                       "AND attempt=%s", (epoch, task_id, attempt))
                return cur.rowcount == 1
        return await self.outages.call("write", q)

    async def request_cancel(self, task_id: str) -> TaskRow | None:
        row = await self._one(f"UPDATE tasks SET cancel_requested=true WHERE task_id=%s "
                              f"RETURNING {TASK_COLS}", (task_id,))
        return None if row is None else task_from_row(row)

    # -- output -------------------------------------------------------------------

    async def read_output(self, task_id: str, attempt: int, offset: int,
                          max_bytes: int) -> bytes:
        async def q() -> bytes:
            out = bytearray()
            async with self.pool.connection() as conn:
                cur = conn.cursor()
                await cur.execute("SELECT off, data FROM output WHERE task_id=%s AND "
                                  "attempt=%s AND off + length(data) > %s ORDER BY off",
                                  (task_id, attempt, offset))
                async for start, data in cur:
                    out += data[max(0, offset - start):]
                    if len(out) >= max_bytes:
                        break
            return bytes(out[:max_bytes])
        return await self.outages.call("read", q)

    async def transitions(self, task_id: str | None = None) -> list[TransitionRow]:
        sql = ("SELECT task_id, attempt, from_state, to_state, node_epoch, accepted, at_ms, "
               "reason, coalesce(write_id::text, ''), node_id FROM transitions")
        args: tuple[str, ...] = ()
        if task_id is not None:
            sql += " WHERE task_id=%s"
            args = (task_id,)
        return [TransitionRow(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7],
                              write_id=r[8].replace("-", ""), node_id=r[9])
                for r in await self._all(sql + " ORDER BY id", args)]

    # -- the group commit writer's flush ---------------------------------------------

    async def _flush(self, ops: Sequence[WriteOp]) -> list[WriteResult | Exception]:
        """The batch, retried whole through an outage (its writes are idempotent)."""
        return await self.outages.call("write batch", lambda: self._flush_once(ops))

    async def _flush_once(self, ops: Sequence[WriteOp]) -> list[WriteResult | Exception]:
        """One transaction, pipelined: every op is sent before any result is read."""
        async with self.pool.connection() as conn:
            cursors = []
            async with conn.pipeline(), conn.transaction():
                for op in ops:
                    for statement in statements(op):
                        cur = conn.cursor()
                        await cur.execute(*statement)
                        cursors.append(cur)
            rows = iter([await cur.fetchone() for cur in cursors])
        if self.after_commit is not None:
            self.after_commit(ops)
        results: list[WriteResult | Exception] = []
        for op in ops:
            if not isinstance(op, EndAttempt):
                results.append(self._result(op, value(next(rows))))
                continue
            appended = (None if op.append is None
                        else self._result(op.append, value(next(rows))))
            row = next(rows)
            ended = None if row is None else self._result(op.transition, row[0])
            # (an append's result is (before, after) or StaleWrite; a transition's a row
            # or StaleWrite)
            results.append(Ended(appended, ended))  # type: ignore[arg-type]
        return results

    def _result(self, op: Append | Transition, value: Any) -> WriteResult | Exception:
        if isinstance(op, Append):
            return op.stale() if value is None else (int(value[0]), int(value[1]))
        if value is None:
            return StaleWrite(f"task {op.task_id} does not exist")
        if value.get("replayed"):
            self.replays += 1
        task = task_from_dict(value["task"])
        return task if value["accepted"] else op.refused(task)



# ``redact`` is re-exported: cortexctl and cortexd's config check name it from here.
__all__ = ["PostgresStore", "is_transient", "redact"]
