"""The store interface: nodes, tasks, attempts, output, transitions.

Every task transition is a conditional write on (task, attempt, node session
epoch) and the expected source states; a writer whose view is stale gets
:class:`StaleWrite`, and the refused transition is recorded too (the history
checker, ``cortexd/history.py``, reads both). Session epochs are minted here,
durable and strictly increasing, never by a cache.

The transition and append writes carry a write id; a write retried after an
unknown commit outcome returns what its committed first try did (see
``rows.py``). A shared store retries transient failures itself (``outage.py``):
its callers wait through an outage instead of seeing it.
"""

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol

from cortex.errors import CortexError
from cortexd.lifecycle import State

if TYPE_CHECKING:
    from cortexd.store.rows import Ended


class StoreError(CortexError):
    """The store failed or refused an operation."""


class StaleWrite(StoreError):
    """A conditional write lost: the task moved on (other attempt, epoch or state)."""


@dataclass(slots=True)
class TaskRow:
    task_id: str
    command: str
    state: State = State.QUEUED
    attempt: int = 0
    node_id: str = ""
    node_epoch: int = 0
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = ""
    timeout_s: int = 0
    selector: dict[str, str] = field(default_factory=dict)
    node_pin: str = ""
    idempotency_key: str = ""
    tenant: str = "default"
    exit_code: int | None = None
    reason: str = ""
    output_bytes: int = 0
    cancel_requested: bool = False
    created_ms: int = 0
    updated_ms: int = 0
    # Task limits (issue 3; stored together as JSON in the ``limits`` column). 0 = none.
    idle_timeout_s: int = 0
    memory_max_bytes: int = 0
    pids_max: int = 0
    queue_timeout_s: int = 0  # FAILED "queue timeout" after this long QUEUED (issue 13)
    # Artifacts (issue 12; in the same JSON column): (sha256, size, path) placed before
    # the command runs, and paths collected after it ends.
    inputs: tuple[tuple[str, int, str], ...] = ()
    outputs: tuple[str, ...] = ()
    tool: str = ""  # the node tool that runs it ("" = the shell; cortex/tools.py)
    # The workspace it runs in (issue 12, migration 0011), the tenant's: "" = none.
    workspace: str = ""


_TASK_FIELDS = tuple(f.name for f in fields(TaskRow))


def pack_row(row: TaskRow) -> list[Any]:
    """A task row as plain values (msgpack: between hub hosts, and shard to control)."""
    return [getattr(row, name).value if name == "state" else getattr(row, name)
            for name in _TASK_FIELDS]


def unpack_row(values: list[Any]) -> TaskRow:
    kw = dict(zip(_TASK_FIELDS, values, strict=True))
    kw["state"] = State(kw["state"])
    kw["inputs"] = tuple(tuple(i) for i in kw["inputs"])
    kw["outputs"] = tuple(kw["outputs"])
    return TaskRow(**kw)


@dataclass(slots=True)
class NodeRow:
    node_id: str
    session_epoch: int
    labels: dict[str, str]
    capacity: int
    agent_version: str
    shard: int
    attached: bool
    last_seen_ms: int


@dataclass(slots=True)
class TransitionRow:
    task_id: str
    attempt: int
    from_state: str
    to_state: str
    node_epoch: int
    accepted: bool
    at_ms: int
    reason: str
    write_id: str = ""  # hex UUID of the write ("" for rows from before schema 3)
    node_id: str = ""  # the node the task was bound to (accepted rows; refused: as named)


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def mint_epoch(self) -> int: ...

    async def node_attached(self, node: NodeRow) -> None: ...

    async def node_detached(self, node_id: str, epoch: int, now_ms: int) -> bool: ...

    async def list_nodes(self) -> list[NodeRow]: ...

    async def create_task(self, task: TaskRow,
                          place: tuple[str, int] | None = None) -> tuple[TaskRow, bool]:
        """Insert ``task`` QUEUED, or find the one its idempotency key names: (row,
        created). ``place`` (node id, its session epoch): in the same commit, place it
        there — QUEUED -> ASSIGNED, attempt 1, fenced on the node's session as any
        placement; refused (and recorded), the task stays QUEUED."""
        ...

    async def get_task(self, task_id: str) -> TaskRow | None: ...

    async def list_tasks(self, state: State | None = None, node_id: str = "",
                         limit: int = 100,
                         before: tuple[int, str] | None = None) -> list[TaskRow]:
        """Newest first (created_ms DESC, task_id); ``before`` (created_ms, task_id) of the
        last row of a page starts the next page just after it."""
        ...

    async def tasks_in(self, states: frozenset[State], node_id: str = "") -> list[TaskRow]: ...

    async def count_in(self, states: frozenset[State]) -> int: ...

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
    ) -> TaskRow: ...

    async def end_attempt(self, task_id: str, *, attempt: int, node_epoch: int, to: State,
                          exit_code: int | None, reason: str, output_end: int,
                          output: bytes = b"", now_ms: int) -> "Ended":
        """A node's Finished as one write: its folded ``output`` appended, then ``to``
        only if the durable end is then ``output_end`` and no cancel was requested
        (``rows.EndAttempt``)."""
        ...

    async def rebind_epoch(self, task_id: str, attempt: int, node_id: str, epoch: int) -> bool: ...

    async def request_cancel(self, task_id: str) -> TaskRow | None: ...

    async def append_output(self, task_id: str, attempt: int, node_epoch: int, offset: int,
                            data: bytes) -> tuple[int, int]: ...

    async def read_output(self, task_id: str, attempt: int, offset: int,
                          max_bytes: int) -> bytes: ...

    async def transitions(self, task_id: str | None = None) -> list[TransitionRow]: ...
