"""Submissions the shards took in on the Control port: the control process's part.

With ``shard_intake`` on, a plain ``Submit`` or ``SubmitMany`` (cortexd/shards/intake.py)
is received, validated, and inserted by the shard that accepted the client's
connection; the control process only decides where each task goes, from its view of
the nodes and the queue, and takes in what the insert did:

1. ``RESERVE`` (per task: id, selector, pin, tool, bytes): a node's slot is taken for
   it (the same choice as placement's ``admit``, from the kept Placer, only while
   nothing is queued ahead), or room in the queue is held, or it is refused with the
   queue's limit. The answer is ``RESERVED``; the reservation is a :class:`Hold`.
2. ``CREATED`` (per task: the stored row, created or found by its idempotency key, or
   the error): the hold is let go and the row taken in (placement's ``admitted``:
   published, its envelope sent — unless the shard sends it, its node's stream being
   there — or queued for the scheduler). The inbox takes CREATED in as it reads the
   ring, not in a worker, so a task is known before any frame of it that followed.

A hold is never left: a shard that dies between the two (kill -9, crash) has its
holds settled from the store when the supervisor reports it down (the insert
committed or it did not, and SQLite's WAL and PostgreSQL's transactions leave no
third state once the process is gone), and a hold older than ``HOLD_S`` is settled
the same way (a shard that lost its control link's answer). Settling is idempotent,
so a ``CREATED`` that arrives after its hold was settled changes nothing twice.
"""

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from cortexd.control.placement import Placement
from cortexd.control.state import HubState, NodeState
from cortexd.ipc import messages as m
from cortexd.lifecycle import State
from cortexd.store import TaskRow
from cortexd.store.base import unpack_row

#: A hold whose CREATED has not come for this long is settled from the store.
HOLD_S = 30.0
#: Holds at most (every shard's submissions in flight together); past it, refused.
MAX_HOLDS = 100_000


@dataclass(slots=True)
class Hold:
    shard: int
    node: NodeState | None  # None: queue room held
    size: int  # held_bytes of the task (queue room)
    since: float


class ShardSubmits:
    def __init__(self, state: HubState, placement: Placement) -> None:
        self.state = state
        self.placement = placement
        self.holds: dict[str, Hold] = {}
        self.queued_held = 0  # holds of queue room: tasks
        self.queued_held_bytes = 0
        self.counts = {"placed": 0, "queued": 0, "refused": 0, "settled": 0}

    # -- RESERVE ---------------------------------------------------------------------

    def reserve(self, shard: int, wanted: list[Any]) -> list[list[Any]]:
        """One answer per task of a RESERVE, in order."""
        return [self._reserve_one(shard, w) for w in wanted]

    def _reserve_one(self, shard: int, want: list[Any]) -> list[Any]:
        st = self.state
        task_id, selector, pin, tool, size = want
        if task_id in self.holds:  # the same id twice: the shard's bug, not a client's
            return ["refused", "INTERNAL", f"task {task_id} is already being submitted"]
        if len(self.holds) >= MAX_HOLDS:
            self.counts["refused"] += 1
            return ["refused", "RESOURCE_EXHAUSTED",
                    f"{MAX_HOLDS} submissions are in flight on this hub; retry later"]
        probe = TaskRow(task_id=task_id, command="", selector=dict(selector), node_pin=pin,
                        tool=tool)
        node = self.placement.reserve(probe)
        now = time.monotonic()
        if node is not None:
            self.holds[task_id] = Hold(shard, node, 0, now)
            self.counts["placed"] += 1
            return ["node", node.node_id, node.epoch]
        s = st.settings
        if (full := st.queue.room_for_size(int(size), s.max_queued_tasks, s.max_queued_bytes,
                                           (self.queued_held, self.queued_held_bytes))):
            self.counts["refused"] += 1
            return ["refused", "RESOURCE_EXHAUSTED", full]
        self.holds[task_id] = Hold(shard, None, int(size), now)
        self.queued_held += 1
        self.queued_held_bytes += int(size)
        self.counts["queued"] += 1
        return ["queue"]

    # -- CREATED ---------------------------------------------------------------------

    def created(self, results: list[Any]) -> None:
        observer = getattr(self.state.store, "observer", None)
        for task_id, packed, created, error, _size, sent in results:
            if error or packed is None:
                # Not stored, or not known to be: the store says which.
                self._let_go(task_id)
                self.state.spawn(self.settle(task_id))
                continue
            if not created:  # its idempotency key named a task the hub has: nothing new
                self._let_go(task_id)
                continue
            hold = self._let_go(task_id, keep_slot=True)
            row = unpack_row(packed)
            if row.state is State.ASSIGNED and observer is not None:
                observer.transitioned(row)  # as the control process's insert counts it
            # The reserved slot goes with the row: taken if placed there, else released.
            self.placement.admitted(row, None if hold is None else hold.node, sent=bool(sent))

    def _let_go(self, task_id: str, keep_slot: bool = False) -> Hold | None:
        """Forget ``task_id``'s hold; its node's slot is released too unless ``keep_slot``
        (then the caller hands it to placement's ``admitted``)."""
        hold = self.holds.pop(task_id, None)
        if hold is None:
            return None
        if hold.node is None:
            self.queued_held -= 1
            self.queued_held_bytes -= hold.size
        elif not keep_slot:
            self.placement.release(task_id, hold.node)
        return hold

    # -- holds whose shard went away -------------------------------------------------

    async def settle(self, task_id: str) -> None:
        """Take in what the store holds of ``task_id`` (nothing: it was never stored)."""
        self._let_go(task_id)
        self.counts["settled"] += 1
        try:
            row = await self.state.store.get_task(task_id)
        except Exception:
            self.state.log.exception("submission_settle_failed", task=task_id)
            return
        if row is not None:
            self.placement.admitted(row, None)

    def shard_down(self, shard: int) -> None:
        for task_id in [t for t, h in self.holds.items() if h.shard == shard]:
            self.state.spawn(self.settle(task_id))

    def sweep(self, now: float) -> None:
        for task_id in [t for t, h in self.holds.items() if now - h.since > HOLD_S]:
            self.state.log.warning("submission_hold_expired", task=task_id)
            self.state.spawn(self.settle(task_id))

    async def run_sweeps(self) -> None:
        while True:
            await asyncio.sleep(HOLD_S / 3)
            self.sweep(time.monotonic())


def reserved_record(req_id: int, answers: list[list[Any]]) -> bytes:
    return m.pack(m.RESERVED, req_id, answers)
