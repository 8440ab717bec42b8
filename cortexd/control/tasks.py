"""The task service: what the Control API does with tasks (submit, read, cancel, input,
logs, journal). The gRPC servicer (service.py) validates and converts; the work is here.

Errors a caller can cause are :class:`RequestError` with a grpc status code name and
a message that says what to do.
"""

from collections.abc import AsyncIterator

from cortex.ids import is_task_id
from cortex.v1 import node_pb2
from cortexd.control.errors import RequestError
from cortexd.control.logreads import LogReadError
from cortexd.control.placement import Placement, undeliverable
from cortexd.control.state import HubState, cancel_frame, now_ms
from cortexd.journal import JournalView
from cortexd.lifecycle import ACTIVE, State
from cortexd.store import StaleWrite, TaskRow

STORE_CHUNK_BYTES = 64 * 1024


def check_deliverable(state: HubState, task: TaskRow) -> None:
    """Refuse what could never be sent to a node (INVALID_ARGUMENT, with the limit)."""
    if (why := undeliverable(task, state.settings.max_frame_bytes)) is not None:
        raise RequestError("INVALID_ARGUMENT", why)


async def admit(state: HubState, placement: Placement | None,
                task: TaskRow) -> tuple[TaskRow, bool]:
    """Store a checked task: placed at once where it can be (placement.py), else
    queued. (row, created)."""
    if placement is not None:
        return await placement.admit(task)
    row, created = await state.store.create_task(task)
    if created:
        state.queue[row.task_id] = row
        state.publish(row.task_id, ("state", row))
        state.kick()
    return row, created


class TaskService:
    def __init__(self, state: HubState, placement: Placement | None = None) -> None:
        self.state = state
        self.placement = placement

    async def submit(self, task: TaskRow) -> tuple[TaskRow, bool]:
        """Create ``task`` (or find the one of its idempotency key): (row, deduplicated)."""
        st = self.state
        if (full := st.queue.room_for(task, st.settings.max_queued_tasks,
                                      st.settings.max_queued_bytes)) is not None:
            raise RequestError("RESOURCE_EXHAUSTED", full)
        check_deliverable(st, task)
        row, created = await admit(st, self.placement, task)
        return row, not created

    async def get(self, task_id: str) -> TaskRow:
        if not is_task_id(task_id):
            raise RequestError("INVALID_ARGUMENT", f"{task_id!r} is not a task id")
        task = await self.state.store.get_task(task_id)
        if task is None:
            raise RequestError("NOT_FOUND", f"task {task_id} not found")
        return task

    async def list(self, state: State | None, node_id: str, limit: int,
                   before: tuple[int, str] | None = None) -> list[TaskRow]:
        return await self.state.store.list_tasks(state, node_id, limit, before)

    async def cancel(self, task_id: str, reason: str) -> TaskRow:
        return (await self.cancel_explained(task_id, reason))[0]

    async def cancel_explained(self, task_id: str, reason: str) -> tuple[TaskRow, str]:
        """Cancel ``task_id``: the row, and what the cancel did (issue 9: a cancel of a
        task whose process has exited while its output drains must say so)."""
        st = self.state
        task = await self.get(task_id)
        if task.state.terminal:
            raise RequestError("FAILED_PRECONDITION", f"task {task_id} is already "
                               f"{task.state.value}")
        if task.state is State.QUEUED:
            try:
                row = await st.store.transition(task_id, attempt=task.attempt, node_epoch=0,
                                                to=State.CANCELLED, reason=reason or
                                                "cancelled while queued", now_ms=now_ms())
            except StaleWrite:
                return await self.cancel_explained(task_id, reason)  # placed meanwhile
            st.queue.pop(task_id, None)
            st.publish(task_id, ("state", row))
            return row, "cancelled while queued"
        cancelled = await st.store.request_cancel(task_id)
        assert cancelled is not None
        row = cancelled
        if row.state.terminal:
            return row, f"it ended meanwhile ({row.state.value})"
        if row.state not in ACTIVE:
            return row, f"cancel recorded ({row.state.value})"
        node = st.nodes.get(row.node_id)
        if node is not None and node.attached:
            await st.send_node(node, cancel_frame(task_id, row.attempt,
                                                  reason or "cancel requested"))
            return row, self._draining(row, f"cancel sent to node {row.node_id}")
        if host := await self._remote_host(row.node_id):
            await st.coord.send(host, ["cancel", task_id, row.attempt,
                                       reason or "cancel requested"])
            return row, f"cancel forwarded to hub {host}, where node {row.node_id} is"
        return row, (f"cancel recorded; node {row.node_id} is not attached: it is cancelled "
                     "when it re-attaches, or the task is LOST after the node's grace")

    def _draining(self, row: TaskRow, done: str) -> str:
        st = self.state
        spooled, _ = st.task_progress(row.task_id, row.attempt)
        resync = st.resyncs.get(row.task_id)
        if resync is not None and resync[0] == row.attempt:
            return (f"{done}; but its process has already exited and its output is being "
                    f"resent (the hub holds {row.output_bytes} bytes): the result stands")
        if spooled > row.output_bytes:
            return (f"{done}; its output is still arriving (the hub holds "
                    f"{row.output_bytes} of {spooled} spooled bytes): if its process has "
                    "already exited, the cancel comes too late and its result stands")
        return done

    async def _remote_host(self, node_id: str) -> str | None:
        """The live host another hub says a node is attached to, if any."""
        coord = self.state.coord
        if not coord.clustered:
            return None
        entry = await coord.lookup(node_id)
        if entry is None or entry.host == coord.host_id:
            return None
        return entry.host if entry.host in await coord.live_hosts() else None

    async def send_input(self, task_id: str, data: bytes) -> int:
        st = self.state
        task = await self.get(task_id)
        if task.state not in ACTIVE:
            raise RequestError("FAILED_PRECONDITION",
                               f"task {task_id} is {task.state.value}; input needs a running task")
        node = st.nodes.get(task.node_id)
        if node is None or not node.attached:
            if host := await self._remote_host(task.node_id):
                await st.coord.send(host, ["input", task_id, task.attempt, data])
                return task.attempt
            raise RequestError("UNAVAILABLE", f"node {task.node_id} is not attached; retry later")
        await st.send_node(node, node_pb2.HubFrame(input=node_pb2.TaskInput(
            task_id=task_id, attempt=task.attempt, data=data)))
        return task.attempt

    async def journal(self, task_id: str) -> tuple[TaskRow, JournalView]:
        task = await self.get(task_id)
        return task, await self.state.journals.view(task.task_id, task.attempt,
                                                    task.output_bytes)

    async def read_logs(self, task_id: str, attempt: int, offset: int, length: int,
                        ) -> AsyncIterator[tuple[int, bytes]]:
        """``(offset, data)`` of a task's output (``length`` 0: to the end).

        From the node's spool for the current attempt while the node is attached
        (logreads.py). From the hub's copy when the task has ended and the node is
        detached or no longer holds the spool (pruned by retention): a finished
        task's stored output is complete, since ``TaskFinished`` follows the last
        byte. A running task on a detached node is UNAVAILABLE; an earlier attempt
        is read from the hub's copy (the node of an earlier attempt is not tracked).
        """
        st = self.state
        task = await self.get(task_id)
        attempt = attempt or task.attempt
        if task.attempt == 0:
            raise RequestError("FAILED_PRECONDITION", f"task {task_id} has not run yet "
                               f"({task.state.value})")
        if attempt > task.attempt:
            raise RequestError("NOT_FOUND", f"task {task_id} has no attempt {attempt} "
                               f"(latest is {task.attempt})")
        end = offset + length if length else None
        node = st.nodes.get(task.node_id) if attempt == task.attempt else None
        if node is not None and node.attached:
            target = node

            async def send(frame: node_pb2.HubFrame) -> None:
                await st.send_node(target, frame)

            try:
                async for at, data in st.log_reads.read(node.node_id, task_id, attempt,
                                                        offset, length, send):
                    offset = at + len(data)
                    yield at, data
                return
            except LogReadError as e:
                if e.code != "NOT_FOUND" or not task.state.terminal:
                    raise RequestError(e.code, str(e)) from e
        elif attempt == task.attempt and not task.state.terminal:
            raise RequestError("UNAVAILABLE", f"node {task.node_id} is not attached; the "
                               f"spool of running task {task_id} can be read when it is back")
        while end is None or offset < end:  # the hub's copy
            want = STORE_CHUNK_BYTES if end is None else min(STORE_CHUNK_BYTES, end - offset)
            data = await st.store.read_output(task_id, attempt, offset, want)
            if not data:
                return
            yield offset, data
            offset += len(data)
