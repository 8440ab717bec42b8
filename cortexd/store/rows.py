"""Row mapping shared by the SQLite and PostgreSQL stores, and the batched write ops.

Both backends keep labels, env and selectors as JSON text, so one mapping serves
both. ``Append`` and ``Transition`` are the writes that go through the group
commit writer (:mod:`cortexd.store.groupcommit`): each is a conditional write
whose outcome is a value or a :class:`StaleWrite` the caller receives.

Each write carries a ``write_id`` (a UUID made once, when the write is
submitted) that the store records with the row it writes (``transitions`` and
``output``). A write whose commit outcome was unknown (the connection died at
COMMIT) is sent again with the same id, and the store recognises its own
committed row: the retry returns what the first try did instead of being
refused as stale or applied twice. Only a write the store would otherwise
refuse (or drop as a duplicate) looks its id up, so the common path pays
nothing for it.
"""

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cortexd.lifecycle import State, sources
from cortexd.store.base import NodeRow, StaleWrite, TaskRow
from cortexd.store.groupcommit import GroupCommit

TASK_COLS = ("task_id, command, state, attempt, node_id, node_epoch, env, cwd, timeout_s, "
             "selector, node_pin, idempotency_key, tenant, exit_code, reason, output_bytes, "
             "cancel_requested, created_ms, updated_ms, limits, tool, workspace")
TASK_COL_COUNT = len(TASK_COLS.split(", "))
NODE_COLS = ("node_id, session_epoch, labels, capacity, agent_version, shard, attached, "
             "last_seen_ms")


def task_from_row(row: tuple[Any, ...] | list[Any]) -> TaskRow:
    return TaskRow(
        task_id=row[0], command=row[1], state=State(row[2]), attempt=row[3], node_id=row[4],
        node_epoch=row[5], env=json.loads(row[6]), cwd=row[7], timeout_s=row[8],
        selector=json.loads(row[9]), node_pin=row[10], idempotency_key=row[11] or "",
        tenant=row[12], exit_code=row[13], reason=row[14], output_bytes=row[15],
        cancel_requested=bool(row[16]), created_ms=row[17], updated_ms=row[18],
        **_limits(row[19]), tool=row[20], workspace=row[21],
    )


LIMIT_FIELDS = ("idle_timeout_s", "memory_max_bytes", "pids_max", "queue_timeout_s")


def _limits(text: str | None) -> dict[str, Any]:
    stored = json.loads(text or "{}")
    extra: dict[str, Any] = {k: int(stored.get(k, 0)) for k in LIMIT_FIELDS}
    extra["inputs"] = tuple((str(a), int(b), str(c)) for a, b, c in stored.get("inputs", ()))
    extra["outputs"] = tuple(str(p) for p in stored.get("outputs", ()))
    return extra


def limits_json(task: TaskRow) -> str:
    """The ``limits`` column: the optional parts of the spec (limits, artifacts)."""
    extra: dict[str, Any] = {k: getattr(task, k) for k in LIMIT_FIELDS if getattr(task, k)}
    if task.inputs:
        extra["inputs"] = [list(i) for i in task.inputs]
    if task.outputs:
        extra["outputs"] = list(task.outputs)
    return json.dumps(extra, sort_keys=True)


def task_from_dict(d: dict[str, Any]) -> TaskRow:
    return task_from_row([d[c] for c in TASK_COLS.split(", ")])


def task_params(task: TaskRow) -> tuple[Any, ...]:
    """The values of TASK_COLS for an insert."""
    return (task.task_id, task.command, task.state.value, task.attempt, task.node_id,
            task.node_epoch, json.dumps(task.env), task.cwd, task.timeout_s,
            json.dumps(task.selector), task.node_pin, task.idempotency_key or None,
            task.tenant, task.exit_code, task.reason, task.output_bytes,
            task.cancel_requested, task.created_ms, task.updated_ms, limits_json(task),
            task.tool, task.workspace)


def node_from_row(row: tuple[Any, ...]) -> NodeRow:
    return NodeRow(node_id=row[0], session_epoch=row[1], labels=json.loads(row[2]),
                   capacity=row[3], agent_version=row[4], shard=row[5],
                   attached=bool(row[6]), last_seen_ms=row[7])


_SOURCES = {state: sources(state) for state in State}  # computed once, not per write


@dataclass(frozen=True, slots=True)
class Append:
    """Append output at the durable end; the result is (end before, end after)."""

    task_id: str
    attempt: int
    node_epoch: int
    offset: int
    data: bytes
    now_ms: int
    write_id: uuid.UUID = field(default_factory=uuid.uuid4)

    def after_end_reason(self) -> str:
        return (f"output after the end refused: {len(self.data)} bytes at offset "
                f"{self.offset}")

    def stale(self) -> StaleWrite:
        return StaleWrite(f"output for {self.task_id}/{self.attempt} from epoch "
                          f"{self.node_epoch} is stale")


@dataclass(frozen=True, slots=True)
class Transition:
    """A conditional state transition; the result is the task after it."""

    task_id: str
    attempt: int
    node_epoch: int
    to: State
    new_attempt: bool
    node_id: str | None
    new_node_epoch: int | None
    exit_code: int | None
    reason: str
    now_ms: int
    write_id: uuid.UUID = field(default_factory=uuid.uuid4)

    @property
    def allowed(self) -> frozenset[State]:
        return _SOURCES[self.to]

    def refused(self, current: TaskRow) -> StaleWrite:
        return StaleWrite(
            f"task {self.task_id}: {current.state.value}/attempt {current.attempt}/epoch "
            f"{current.node_epoch}, writer expected attempt {self.attempt} epoch "
            f"{self.node_epoch} and a state in {sorted(s.value for s in self.allowed)}")

    def refusal_reason(self, current: TaskRow) -> str:
        return (f"stale: task is {current.state.value} attempt {current.attempt} "
                f"epoch {current.node_epoch}")


def placing(task: TaskRow, node_id: str, epoch: int) -> Transition:
    """QUEUED -> ASSIGNED of a task as it is inserted (``create_task(place=…)``): the
    same conditional, fenced write as a scheduling pass's, in the insert's commit."""
    return Transition(task.task_id, 0, 0, State.ASSIGNED, True, node_id, epoch, None, "",
                      int(time.time() * 1000))


@dataclass(frozen=True, slots=True)
class EndAttempt:
    """A node's TaskFinished as one write (issue 9): its folded output appended
    (``append``, optional), then its terminal ``transition`` in the same commit — tried
    only when the attempt's durable output end is then ``end`` and no cancel was
    requested, the case where the end needs no decision by the hub (finishes.py). A
    transition whose attempt, epoch or state is stale is tried, refused and recorded
    as any other. Otherwise it is not tried, and the hub decides as for any Finished
    (the append stands: it is conditional on its own)."""

    append: Append | None
    end: int
    transition: Transition


@dataclass(frozen=True, slots=True)
class Ended:
    """What an :class:`EndAttempt` did: the append's (before, after) or refusal (None:
    nothing to append), and the task after its end, the refusal, or None: not tried."""

    appended: tuple[int, int] | StaleWrite | None
    ended: TaskRow | StaleWrite | None


WriteOp = Append | Transition | EndAttempt


class WriteObserver(Protocol):
    def transitioned(self, row: TaskRow) -> None: ...

    def appended(self, before: int, after: int) -> None: ...

    def committed(self, rows: int, seconds: float) -> None: ...
WriteResult = tuple[int, int] | TaskRow | Ended


class BatchedWrites:
    """The two writes both stores send through their group-commit writer.

    Each caller awaits its own result, so an ack goes out only after the batch that
    holds its write has committed.
    """

    writer: GroupCommit[WriteOp, WriteResult]
    #: Test hook: called with a batch right after it committed; raising from it makes
    #: the commit's outcome look unknown to the writer (as a connection lost at COMMIT).
    after_commit: Callable[[Sequence["WriteOp"]], None] | None = None
    #: Metrics hook (``cortexd/metrics/storewrites.py``), told of each committed write.
    observer: "WriteObserver | None" = None

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
        result = await self.writer.submit(Transition(
            task_id, attempt, node_epoch, to, new_attempt, node_id, new_node_epoch, exit_code,
            reason, now_ms))
        assert isinstance(result, TaskRow)
        if self.observer is not None:
            self.observer.transitioned(result)
        return result

    async def append_output(self, task_id: str, attempt: int, node_epoch: int, offset: int,
                            data: bytes) -> tuple[int, int]:
        """Append at the durable end; return (end before, end after).

        Bytes below the current end are duplicates of a replay and are dropped; a
        chunk starting past the end is a gap and is refused (the node resends from
        the acknowledged offset).
        """
        result = await self.writer.submit(
            Append(task_id, attempt, node_epoch, offset, data, int(time.time() * 1000)))
        assert isinstance(result, tuple)
        if self.observer is not None:
            self.observer.appended(*result)
        return result

    async def end_attempt(self, task_id: str, *, attempt: int, node_epoch: int, to: State,
                          exit_code: int | None, reason: str, output_end: int,
                          output: bytes = b"", now_ms: int) -> Ended:
        """A Finished in one write: ``output`` (the last bytes before ``output_end``)
        appended, then ``to`` — only if the durable end is then ``output_end`` and no
        cancel was requested (see :class:`EndAttempt`)."""
        append = (Append(task_id, attempt, node_epoch, output_end - len(output), output,
                         now_ms) if output else None)
        result = await self.writer.submit(EndAttempt(append, output_end, Transition(
            task_id, attempt, node_epoch, to, False, None, None, exit_code, reason, now_ms)))
        assert isinstance(result, Ended)
        if self.observer is not None:
            if isinstance(result.appended, tuple):
                self.observer.appended(*result.appended)
            if isinstance(result.ended, TaskRow):
                self.observer.transitioned(result.ended)
        return result
