"""The shards' rings as the control process reads them: in order per node.

Inputs are ring messages from each shard (attach, node frames, what the node frames a
shard wrote to the store did, detach, stats);
they go to the node sessions (sessions.py) and the attempts (attempts.py). Only
one node's messages must keep their order (output before finished, attach before
frames). Each node with messages waiting has one worker that handles them in
order; the ring is read on while workers wait for the store, so the writes of
many nodes and of successive ring batches share group commits (there is no
barrier per ring batch). Node frames are parsed once, here.

Messages of one shard waiting for their workers are bounded
(``MAX_PENDING_PER_SHARD``): past it the reader stops draining that shard's ring,
which fills — back-pressure on the shard, never memory.
"""

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from cortex.v1 import node_pb2
from cortexd.control.attempts import Attempts
from cortexd.control.sessions import NodeSessions
from cortexd.control.state import HubState, ShardInfo
from cortexd.control.submits import ShardSubmits, reserved_record
from cortexd.ipc import messages as m
from cortexd.ipc.link import RingLink

MAX_PENDING_PER_SHARD = 4096
#: Frame kinds whose store writes may be in flight together for one node (each is a
#: conditional write on its task's attempt and epoch; none changes what another checks).
PIPELINED_KINDS = frozenset({"started", "output"})
MAX_RUN = 64  # frames of one node handled side by side, at most
#: How far ahead in a node's queue an output looks for its task's finished frame.
FINISHED_LOOKAHEAD = 8

#: A ring message from a shard with its node frame parsed once (None for others).
Pending = tuple[list[Any], node_pb2.NodeFrame | None]


@dataclass(eq=False)
class ShardQueues:
    """One shard's ring messages waiting for their node's worker, in order per node."""

    queues: dict[str, deque[Pending]] = field(default_factory=dict)
    count: int = 0
    room: asyncio.Event = field(default_factory=asyncio.Event)
    workers: set[asyncio.Task[None]] = field(default_factory=set)

    def took(self, n: int) -> None:
        self.count -= n
        if self.count <= MAX_PENDING_PER_SHARD // 2:
            self.room.set()


def finished_follows(out: node_pb2.TaskOutput, later: deque[Pending]) -> bool:
    for i, (msg, frame) in enumerate(later):
        if i == FINISHED_LOOKAHEAD:
            break
        if (frame is not None and msg[0] == m.FRAME and frame.HasField("finished")
                and frame.finished.task_id == out.task_id
                and frame.finished.attempt == out.attempt):
            return True
    return False


class ShardInbox:
    def __init__(self, state: HubState, sessions: NodeSessions, attempts: Attempts,
                 submits: ShardSubmits) -> None:
        self.state = state
        self.sessions = sessions
        self.attempts = attempts
        self.submits = submits

    async def serve(self, shard: int, link: RingLink) -> None:
        """Handle a shard's messages: in order per node, different nodes concurrently."""
        pending = ShardQueues()
        try:
            await self._read(shard, link, pending)
        finally:  # cancelled (stop): the node workers go with the reader
            for worker in pending.workers:
                worker.cancel()

    async def _read(self, shard: int, link: RingLink, pending: ShardQueues) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if pending.count >= MAX_PENDING_PER_SHARD:
                pending.room.clear()
                await pending.room.wait()
            for record in await link.recv():
                try:
                    msg = m.unpack(record)
                    frame = (node_pb2.NodeFrame.FromString(msg[3])
                             if msg[0] in (m.FRAME, m.WROTE) else None)
                except Exception:  # msgpack ValueError, protobuf DecodeError
                    self.state.log.error("ring_record_malformed", shard=shard,
                                         size=len(record))
                    continue
                if msg[0] == m.CREATED:  # taken in here, in ring order (submits.py)
                    self._created(shard, msg)
                    continue
                key = str(msg[2] if msg[0] == m.ATTACH else msg[1] if len(msg) > 1 else "")
                if msg[0] == m.RESERVE:  # a shard's submissions (submits.py)
                    key = f"\0submit:{key}"
                pending.count += 1
                queue = pending.queues.get(key)
                if queue is not None:
                    queue.append((msg, frame))
                    continue
                pending.queues[key] = queue = deque([(msg, frame)])
                worker = loop.create_task(self._drain_node(shard, key, queue, pending))
                pending.workers.add(worker)
                worker.add_done_callback(pending.workers.discard)

    def _created(self, shard: int, msg: list[Any]) -> None:
        try:
            assert isinstance(msg[2], list)
            self.submits.created(msg[2])
        except Exception:
            self.state.log.exception("ring_message_failed", shard=shard)

    async def _drain_node(self, shard: int, key: str, queue: deque[Pending],
                          pending: ShardQueues) -> None:
        """Handle one node's queued messages in order until its queue is empty.

        A run of started/output frames (a task's Started and its first output, say) is
        handled side by side: gather starts the handlers in order and each queues its
        store write before its first suspension, so the run's writes go out in one
        group commit, in the node's order, instead of one commit after the other. (Were
        two outputs of a task ever queued out of order, the later one would be refused
        as a gap and the node would resend it from the acknowledged offset.)
        """
        try:
            while queue:
                run = [queue.popleft()]
                frame = run[0][1]
                if frame is not None and frame.WhichOneof("kind") in PIPELINED_KINDS:
                    while queue and len(run) < MAX_RUN and (nxt := queue[0][1]) is not None \
                            and nxt.WhichOneof("kind") in PIPELINED_KINDS:
                        run.append(queue.popleft())
                pending.took(len(run))
                if len(run) == 1:
                    await self._handle(shard, run[0], queue)
                else:
                    await asyncio.gather(*(self._handle(shard, item, queue) for item in run))
        finally:
            if pending.queues.get(key) is queue:
                del pending.queues[key]

    async def _handle(self, shard: int, item: Pending, queue: deque[Pending]) -> None:
        msg, frame = item
        try:
            if frame is None:
                await self._dispatch(shard, msg)
            else:
                node_id, epoch = msg[1], msg[2]
                assert isinstance(node_id, str) and isinstance(epoch, int)
                if msg[0] == m.WROTE:  # a frame its shard wrote (cortexd/shards/writes.py)
                    await self.attempts.on_written(node_id, epoch, frame, msg[4:])
                    return
                follows = frame.HasField("output") and finished_follows(frame.output, queue)
                await self.attempts.on_frame(node_id, epoch, frame, follows)
        except Exception:
            self.state.log.exception("ring_message_failed", shard=shard)

    async def _dispatch(self, shard: int, msg: list[object]) -> None:
        kind = msg[0]
        if kind == m.ATTACH:
            conn_id, node_id, hello = msg[1], msg[2], msg[3]
            assert isinstance(conn_id, int) and isinstance(node_id, str)
            assert isinstance(hello, bytes)
            await self.sessions.attach(shard, conn_id, node_id, hello)
        elif kind == m.DETACH:
            node_id, epoch, reason = msg[1], msg[2], msg[3]
            assert isinstance(node_id, str) and isinstance(epoch, int)
            await self.sessions.detach(node_id, epoch, str(reason))
        elif kind == m.RESERVE:
            req_id, wanted = msg[1], msg[2]
            assert isinstance(req_id, int) and isinstance(wanted, list)
            await self.state.to_shard(shard, reserved_record(req_id,
                                                             self.submits.reserve(shard, wanted)))
        elif kind == m.STATS:
            info = self.state.shards.setdefault(shard, ShardInfo())
            info.nodes, info.frames_in, info.frames_out = (int(x) for x in msg[1:4])  # type: ignore[call-overload]
