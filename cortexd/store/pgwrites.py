"""The PostgreSQL store's conditional writes as SQL: the statements of one op.

Each op of the group-commit writer is one statement (a call of ``cortex_transition`` or
``cortex_append_output``, migrations/pg/functions.sql), except an ``EndAttempt``: its
append, then its transition guarded in SQL — tried only where it needs no decision by
the hub (``rows.EndAttempt``). They run pipelined, in one transaction per batch.
"""

from typing import Any

from cortexd.store.rows import Append, EndAttempt, Transition, WriteOp

APPEND_SQL = "SELECT cortex_append_output(%s, %s, %s, %s, %s, %s, %s::uuid)"
TRANSITION_SQL = ("SELECT cortex_transition(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, "
                  "%s::uuid)")
#: EndAttempt's transition: not tried (no row) while the task is current for it but its
#: durable end is not the node's or a cancel was requested. The row is locked by the
#: append before it (when there is one) and by cortex_transition, which checks again.
END_SQL = (TRANSITION_SQL + " FROM tasks WHERE task_id = %s AND NOT (attempt = %s AND "
           "node_epoch = %s AND state = ANY(%s) AND (output_bytes <> %s OR cancel_requested))")


def value(row: tuple[Any, ...] | None) -> Any:
    return row[0] if row else None


def statements(op: WriteOp) -> list[tuple[str, tuple[Any, ...]]]:
    if not isinstance(op, EndAttempt):
        return [statement(op)]
    t = op.transition
    end = (END_SQL, (*statement(t)[1], t.task_id, t.attempt, t.node_epoch,
                     [s.value for s in t.allowed], op.end))
    return [end] if op.append is None else [statement(op.append), end]


def statement(op: Append | Transition) -> tuple[str, tuple[Any, ...]]:
    if isinstance(op, Append):
        return APPEND_SQL, (op.task_id, op.attempt, op.node_epoch, op.offset, op.data,
                            op.now_ms, op.write_id)
    return TRANSITION_SQL, (
        op.task_id, op.attempt, op.node_epoch, op.to.value, [s.value for s in op.allowed],
        op.to.terminal, op.new_attempt, op.node_id, op.new_node_epoch, op.exit_code, op.reason,
        op.now_ms, op.write_id)

