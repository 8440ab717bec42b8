"""The SQLite store's writer-thread batch: the conditional writes, one transaction.

:class:`SQLiteWrites` is what the group commit writer runs on the store's thread for
each batch (``SQLiteStore._flush``): one ``BEGIN IMMEDIATE … COMMIT`` around every
queued op, in submission order, so a read queued after a write sees it. Invariants:

- A transition is applied only if the task's (attempt, node session epoch) match and
  its state is one the target may be reached from; otherwise it is recorded refused in
  ``transitions`` and its caller gets :class:`StaleWrite`. Placement (to ``ASSIGNED``
  onto a node) is fenced on the node's current session too.
- An append writes only the bytes past the durable end; a finished task's output is
  final (a later append is refused, and recorded).
- A write retried after an unknown commit outcome finds its own row by its write id
  and answers as its first try did (``rows.py``), counted in ``replays``.
"""

import dataclasses
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cortexd.lifecycle import State
from cortexd.store.base import StaleWrite, StoreError, TaskRow
from cortexd.store.rows import (
    TASK_COL_COUNT,
    TASK_COLS,
    Append,
    EndAttempt,
    Ended,
    Transition,
    WriteOp,
    WriteResult,
    task_from_row,
    task_params,
)


@dataclass(frozen=True, slots=True)
class Create:
    """Insert a task (or find the one its idempotency key names); (row, created). With
    ``place``, the new task is then placed by that transition, in the same commit."""

    task: TaskRow
    place: Transition | None = None


@dataclass(frozen=True, slots=True)
class Read:
    """Read a task (None when unknown), in order with the writes queued before it."""

    task_id: str


#: What the SQLite writer queues: the shared conditional writes plus its own two.
SQLiteOp = WriteOp | Create | Read
SQLiteResult = WriteResult | tuple[TaskRow, bool] | TaskRow | None


_INSERT_TASK = (f"INSERT INTO tasks ({TASK_COLS}) VALUES ({','.join('?' * TASK_COL_COUNT)}) "
                "ON CONFLICT(task_id) DO NOTHING")
_SELECT_TASK = f"SELECT {TASK_COLS} FROM tasks WHERE task_id=?"
_INSERT_ATTEMPT = ("INSERT INTO attempts (task_id, attempt, node_id, node_epoch, state, "
                   "started_ms) VALUES (?,?,?,?,?,?)")
_INSERT_ACCEPTED = ("INSERT INTO transitions (task_id, attempt, from_state, to_state, "
                    "node_epoch, accepted, at_ms, reason, write_id, node_id) "
                    "VALUES (?,?,?,?,?,1,?,?,?,?)")


class SQLiteWrites:
    """The batch's writes, mixed into :class:`~cortexd.store.sqlite.SQLiteStore`."""

    replays: int
    after_commit: Callable[[Sequence[WriteOp]], None] | None

    @property
    def db(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _create(self, task: TaskRow, place: Transition | None) -> tuple[TaskRow, bool]:
        if task.idempotency_key:
            row = self.db.execute(
                f"SELECT {TASK_COLS} FROM tasks WHERE tenant=? AND idempotency_key=?",
                (task.tenant, task.idempotency_key)).fetchone()
            if row is not None:
                return task_from_row(row), False
        if place is not None and self._session_is(place):
            # Inserted placed: the row as QUEUED -> ASSIGNED would leave it, one INSERT
            # instead of an INSERT and an UPDATE, and the attempt and transition rows.
            placed = dataclasses.replace(
                task, state=State.ASSIGNED, attempt=1, node_id=place.node_id or "",
                node_epoch=place.new_node_epoch or 0, updated_ms=place.now_ms)
            if self.db.execute(_INSERT_TASK, task_params(placed)).rowcount == 1:
                self.db.execute(_INSERT_ATTEMPT, (task.task_id, 1, placed.node_id,
                                                  placed.node_epoch, "ASSIGNED",
                                                  place.now_ms))
                self._record(place, "QUEUED", 1, placed.node_epoch, placed.node_id)
                return placed, True
        elif self.db.execute(_INSERT_TASK, task_params(task)).rowcount == 1:
            if place is None:
                return task, True
            try:  # the node's session moved on: refused (and recorded), it stays QUEUED
                return self._transition(place, task, mine=False), True
            except StaleWrite:
                return task, True
        # The id is taken: our own insert, committed in a batch whose outcome looked
        # unknown and is now retried (task ids are random, never reused).
        row = self._get(task.task_id)
        if row is None or (row.command, row.tenant) != (task.command, task.tenant):
            raise StoreError(f"task id {task.task_id} is already used by another task")
        self.replays += 1
        return row, True

    def _get(self, task_id: str) -> TaskRow | None:
        row = self.db.execute(_SELECT_TASK, (task_id,)).fetchone()
        return None if row is None else task_from_row(row)

    def _flush_sync(self, ops: Sequence[SQLiteOp]) -> list[SQLiteResult | Exception]:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            results: list[SQLiteResult | Exception] = []
            for op in ops:
                try:
                    if isinstance(op, Append):
                        results.append(self._append(op))
                    elif isinstance(op, Transition):
                        results.append(self._transition(op))
                    elif isinstance(op, EndAttempt):
                        results.append(self._end(op))
                    elif isinstance(op, Read):
                        results.append(self._get(op.task_id))
                    else:
                        results.append(self._create(op.task, op.place))
                except StaleWrite as e:
                    results.append(e)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if self.after_commit is not None:
            self.after_commit([op for op in ops
                               if isinstance(op, Append | Transition | EndAttempt)])
        return results

    def _session_is(self, place: Transition) -> bool:
        """Placement's fence: the node is in the session the placement was made for."""
        row = self.db.execute("SELECT session_epoch FROM nodes WHERE node_id=?",
                              (place.node_id,)).fetchone()
        return row is None or row[0] == place.new_node_epoch

    def _record(self, op: Transition, source: str, attempt: int, epoch: int,
                node_id: str) -> None:
        self.db.execute(_INSERT_ACCEPTED, (op.task_id, attempt, source, op.to.value, epoch,
                                           op.now_ms, op.reason, op.write_id.hex, node_id))

    def _end(self, op: EndAttempt) -> Ended:
        t, a = op.transition, op.append
        current = self._get(t.task_id)
        if (current is not None and current.attempt == t.attempt
                and current.node_epoch == t.node_epoch and current.state in t.allowed
                and not current.cancel_requested
                and (current.output_bytes == op.end if a is None
                     else a.offset <= current.output_bytes <= op.end)):
            # The common end, in one pass: the folded output's new part, then the end,
            # one UPDATE each of the task and the attempt (what _append followed by
            # _transition would write, in 5 statements instead of 9).
            before = current.output_bytes
            if a is not None and before < op.end:
                self.db.execute("INSERT INTO output (task_id, attempt, off, data, write_id) "
                                "VALUES (?,?,?,?,?)", (t.task_id, t.attempt, before,
                                                       a.data[before - a.offset:],
                                                       a.write_id.hex))
            self.db.execute("UPDATE tasks SET state=?, exit_code=?, reason=?, output_bytes=?, "
                            "updated_ms=? WHERE task_id=?", (t.to.value, t.exit_code, t.reason,
                                                             op.end, t.now_ms, t.task_id))
            self.db.execute("UPDATE attempts SET state=?, exit_code=?, node_epoch=?, "
                            "finished_ms=?, output_bytes=? WHERE task_id=? AND attempt=?",
                            (t.to.value, t.exit_code, t.node_epoch, t.now_ms, op.end,
                             t.task_id, t.attempt))
            self._record(t, current.state.value, t.attempt, t.node_epoch, current.node_id)
            # The row is ours (read above): changed in place, not copied.
            current.state, current.exit_code, current.reason = t.to, t.exit_code, t.reason
            current.output_bytes, current.updated_ms = op.end, t.now_ms
            return Ended(None if a is None else (before, op.end), current)
        return self._end_apart(op)

    def _end_apart(self, op: EndAttempt) -> Ended:
        """The general case: the append, then the transition if the end needs no
        decision (a stale one is tried, refused and recorded)."""
        appended: tuple[int, int] | StaleWrite | None = None
        if op.append is not None:
            try:
                appended = self._append(op.append)
            except StaleWrite as e:
                appended = e
        t = op.transition
        current = self._get(t.task_id)
        if current is None:
            return Ended(appended, None)  # the hub reads it, as for any Finished
        if (current.attempt == t.attempt and current.node_epoch == t.node_epoch
                and current.state in t.allowed
                and (current.output_bytes != op.end or current.cancel_requested)):
            return Ended(appended, None)  # an end the hub must decide (finishes.py)
        try:
            return Ended(appended, self._transition(t, current))
        except StaleWrite as e:
            return Ended(appended, e)

    def _transition(self, op: Transition, current: TaskRow | None = None,
                    mine: bool = True) -> TaskRow:
        """``mine``: ``current`` (when given) was read here, so it may be changed in
        place and returned (not the caller's row)."""
        db = self.db
        if current is None:
            current = self._get(op.task_id)
        if current is None:
            raise StaleWrite(f"task {op.task_id} does not exist")
        if not (current.attempt == op.attempt and current.node_epoch == op.node_epoch
                and current.state in op.allowed):
            seen = db.execute("SELECT accepted FROM transitions WHERE task_id=? AND write_id=?",
                              (op.task_id, op.write_id.hex)).fetchone()
            if seen is not None:  # a retry of a write that committed: answer as it did
                self.replays += 1
                if seen[0]:
                    return current
                raise op.refused(current)
            db.execute("INSERT INTO transitions (task_id, attempt, from_state, to_state, "
                       "node_epoch, accepted, at_ms, reason, write_id, node_id) "
                       "VALUES (?,?,?,?,?,0,?,?,?,?)",
                       (op.task_id, op.attempt, current.state.value, op.to.value,
                        op.node_epoch, op.now_ms, op.refusal_reason(current), op.write_id.hex,
                        op.node_id or ""))
            raise op.refused(current)
        if op.to is State.ASSIGNED and op.new_node_epoch is not None and op.node_id:
            # Placement is fenced too: only onto the node's current session.
            row = db.execute("SELECT session_epoch FROM nodes WHERE node_id=?",
                             (op.node_id,)).fetchone()
            if row is not None and row[0] != op.new_node_epoch:
                db.execute("INSERT INTO transitions (task_id, attempt, from_state, to_state, "
                           "node_epoch, accepted, at_ms, reason, write_id, node_id) "
                           "VALUES (?,?,?,?,?,0,?,?,?,?)",
                           (op.task_id, op.attempt, current.state.value, op.to.value,
                            op.new_node_epoch, op.now_ms,
                            f"stale: node {op.node_id} is in session {row[0]}, not "
                            f"{op.new_node_epoch}", op.write_id.hex, op.node_id))
                raise StaleWrite(f"node {op.node_id} is in session {row[0]}, not "
                                 f"{op.new_node_epoch}")
        nxt_attempt = op.attempt + 1 if op.new_attempt else op.attempt
        nxt_node = current.node_id if op.node_id is None else op.node_id
        nxt_epoch = op.node_epoch if op.new_node_epoch is None else op.new_node_epoch
        out_bytes = 0 if op.new_attempt else current.output_bytes
        if op.to is State.QUEUED:
            nxt_node, nxt_epoch = "", 0
        db.execute(
            "UPDATE tasks SET state=?, attempt=?, node_id=?, node_epoch=?, exit_code=?, "
            "reason=?, output_bytes=?, updated_ms=? WHERE task_id=?",
            (op.to.value, nxt_attempt, nxt_node, nxt_epoch, op.exit_code, op.reason, out_bytes,
             op.now_ms, op.task_id))
        if op.new_attempt:
            db.execute("INSERT INTO attempts (task_id, attempt, node_id, node_epoch, state, "
                       "started_ms) VALUES (?,?,?,?,?,?)",
                       (op.task_id, nxt_attempt, nxt_node, nxt_epoch, op.to.value, op.now_ms))
        elif op.attempt > 0:
            db.execute("UPDATE attempts SET state=?, exit_code=?, node_epoch=?, "
                       "finished_ms=? WHERE task_id=? AND attempt=?",
                       (op.to.value, op.exit_code, nxt_epoch,
                        op.now_ms if op.to.terminal else None, op.task_id, op.attempt))
        db.execute("INSERT INTO transitions (task_id, attempt, from_state, to_state, "
                   "node_epoch, accepted, at_ms, reason, write_id, node_id) "
                   "VALUES (?,?,?,?,?,1,?,?,?,?)",
                   (op.task_id, nxt_attempt, current.state.value, op.to.value, nxt_epoch,
                    op.now_ms, op.reason, op.write_id.hex,
                    current.node_id if op.to is State.QUEUED else nxt_node))
        # The row as the UPDATE above left it, without reading it back.
        after = current if mine else dataclasses.replace(current)
        after.state, after.attempt, after.node_id, after.node_epoch = (
            op.to, nxt_attempt, nxt_node, nxt_epoch)
        after.exit_code, after.reason, after.output_bytes, after.updated_ms = (
            op.exit_code, op.reason, out_bytes, op.now_ms)
        return after

    def _append(self, op: Append) -> tuple[int, int]:
        db = self.db
        row = db.execute("SELECT output_bytes, state FROM tasks WHERE task_id=? AND attempt=? "
                         "AND node_epoch=?", (op.task_id, op.attempt, op.node_epoch)).fetchone()
        ended = row is not None and State(row[1]).terminal
        if row is None or ended or op.offset + len(op.data) <= int(row[0]):
            mine = db.execute("SELECT off, off + length(data) FROM output WHERE task_id=? "
                              "AND attempt=? AND write_id=?",
                              (op.task_id, op.attempt, op.write_id.hex)).fetchone()
            if mine is not None:  # a retry of an append that committed
                return int(mine[0]), int(mine[1])
            if ended:  # a finished task's output is final: refused, and recorded
                db.execute("INSERT INTO transitions (task_id, attempt, from_state, to_state, "
                           "node_epoch, accepted, at_ms, reason, write_id, node_id) "
                           "VALUES (?,?,?,?,?,0,?,?,?,'')",
                           (op.task_id, op.attempt, row[1], row[1], op.node_epoch, op.now_ms,
                            op.after_end_reason(), op.write_id.hex))
            if row is None or ended:
                raise op.stale()
        end = int(row[0])
        if op.offset > end or op.offset + len(op.data) <= end:
            return end, end
        chunk = op.data[end - op.offset:]
        db.execute("INSERT INTO output (task_id, attempt, off, data, write_id) "
                   "VALUES (?,?,?,?,?)", (op.task_id, op.attempt, end, chunk, op.write_id.hex))
        new_end = end + len(chunk)
        db.execute("UPDATE tasks SET output_bytes=?, updated_ms=? WHERE task_id=?",
                   (new_end, op.now_ms, op.task_id))
        db.execute("UPDATE attempts SET output_bytes=? WHERE task_id=? AND attempt=?",
                   (new_end, op.task_id, op.attempt))
        return end, new_end
