"""Reading a range of a task's spool from its node (``Control.ReadLogs``).

docs/protocol.md, "Reading a spool". The control process sends ``LogRequest`` with a
fresh ``request_id`` to the node's shard; the node answers with ``LogChunk`` frames
that :meth:`LogReads.deliver` routes back by ``request_id`` to the one waiting reader.
Invariants:

- Bounded by construction: one request asks for at most ``REQUEST_BYTES`` (1 MiB), the
  node answers it in at most 16 chunks, and the reader's queue holds 17; a longer range
  is read as successive requests, each sent only after the previous one ended, so a
  slow client holds at most one request's chunks in memory.
- A chunk is accepted only from the node the request went to; one for an unknown or
  finished request (a late answer after a timeout) is dropped.
- A reader never waits forever: ``chunk_timeout_s`` per chunk, and a node that detaches
  fails its readers at once.
- Where the bytes come from (the node's spool or the hub's copy) is the task
  service's choice (tasks.py, ``TaskService.read_logs``); this module only routes.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from cortex.v1 import node_pb2

REQUEST_BYTES = 1024 * 1024
QUEUE_CHUNKS = 17
CHUNK_TIMEOUT_S = 10.0


class LogReadError(Exception):
    """The node could not serve the range; ``code`` is a grpc.StatusCode name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(eq=False)
class _Waiter:
    node_id: str
    queue: asyncio.Queue[node_pb2.LogChunk | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_CHUNKS))
    overflowed: bool = False


class LogReads:
    def __init__(self, chunk_timeout_s: float = CHUNK_TIMEOUT_S) -> None:
        self._next_id = 0
        self._waiting: dict[int, _Waiter] = {}
        self.chunk_timeout_s = chunk_timeout_s

    def __len__(self) -> int:
        return len(self._waiting)

    def deliver(self, node_id: str, chunk: node_pb2.LogChunk) -> None:
        waiter = self._waiting.get(chunk.request_id)
        if waiter is None or waiter.node_id != node_id:
            return
        try:
            waiter.queue.put_nowait(chunk)
        except asyncio.QueueFull:  # the node sent more than one request's worth
            waiter.overflowed = True

    def node_gone(self, node_id: str) -> None:
        for waiter in self._waiting.values():
            if waiter.node_id == node_id:
                while waiter.queue.full():  # make room for the end marker
                    waiter.queue.get_nowait()
                waiter.queue.put_nowait(None)

    async def read(self, node_id: str, task_id: str, attempt: int, offset: int, length: int,
                   send: Callable[[node_pb2.HubFrame], Awaitable[None]],
                   ) -> AsyncIterator[tuple[int, bytes]]:
        """Yield ``(offset, data)`` from the node's spool for ``[offset, offset + length)``
        (``length`` 0: to the spool's end as the node sees it)."""
        end = offset + length if length else None
        while end is None or offset < end:
            ask = REQUEST_BYTES if end is None else min(REQUEST_BYTES, end - offset)
            self._next_id += 1
            rid = self._next_id
            waiter = self._waiting[rid] = _Waiter(node_id)
            try:
                await send(node_pb2.HubFrame(log_request=node_pb2.LogRequest(
                    request_id=rid, task_id=task_id, attempt=attempt, offset=offset,
                    length=ask)))
                got, spooled = 0, 0
                while True:
                    try:
                        chunk = await asyncio.wait_for(waiter.queue.get(), self.chunk_timeout_s)
                    except TimeoutError:
                        raise LogReadError("UNAVAILABLE", f"node {node_id} did not answer the "
                                           f"log read within {self.chunk_timeout_s:g} s") from None
                    if chunk is None:
                        raise LogReadError("UNAVAILABLE", f"node {node_id} went away during "
                                           "the log read; retry when it is back")
                    if waiter.overflowed:
                        raise LogReadError("INTERNAL", f"node {node_id} sent more than asked")
                    if chunk.error:
                        raise LogReadError("NOT_FOUND", f"node {node_id}: {chunk.error}")
                    if chunk.data:
                        if chunk.offset != offset:
                            raise LogReadError("INTERNAL", f"node {node_id} answered offset "
                                               f"{chunk.offset}, expected {offset}")
                        yield offset, chunk.data
                        offset += len(chunk.data)
                        got += len(chunk.data)
                    spooled = chunk.spooled_bytes
                    if chunk.eof:
                        break
            finally:
                self._waiting.pop(rid, None)
            if got < ask or offset >= spooled:  # the spool's end
                return

