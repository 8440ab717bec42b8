"""A node's task frames written by the shard that holds its stream (issue 9).

The control process used to make every node frame's durable write: one process for
every task's Started, output and end, its store thread and the hand-off to it
included — the serial stage of the hub. Now the shard that reads a node's stream
makes those writes on its own connection to the store, the same conditional writes
on (task, attempt, session epoch) as before: a frame of a superseded session, or of
a shard that lost its lease, is refused by the store, never believed.

One session's frames stay in the node's order (:class:`Pipeline`): the reader starts
each write as the frame arrives (writes of one session share the shard's group
commits and go to the store in arrival order) and queues every frame, written or not;
one completer takes them in that order, and for each:

- a write that committed: the node gets its ack from here (``OutputAck``, unless the
  task's Finished is already queued behind it; ``FinishedAck`` when the end is
  durable) — an ack only after the commit that makes it true — and the control
  process gets ``WROTE`` with what the write did (the row, the output's new end), so
  that it frees the slot, wakes watchers, the journal and the scheduler;
- a Finished whose end needs a decision (more output claimed than held, a cancel
  asked): ``WROTE`` with what was appended, and control decides and answers;
- a write the store refused, or failed: the frame goes to control as it would have
  before (``FRAME``), which tries it again, records the refusal and reacts (the
  stray process told to stop); every later frame of that task in this session goes
  to control too (:class:`Tracker`), so control's writes for it keep their order;
- a frame that is not written here (prompt, progress, rejected, logs, calls): to
  control, in its place in the order.

Invariants: at most ``MAX_PIPELINE`` frames and ``MAX_SESSION_BYTES`` of a session wait,
and ``ShardWrites.max_bytes`` of all the shard's sessions together (then the reader
waits, and HTTP/2 flow control holds the node: a stalled control process fills its ring,
then these, then holds the nodes — it never makes a shard buffer without bound);
``Tracker`` is bounded by ``MAX_TRACKED`` (past it the session sends all its task frames
to control: always correct, slower).
"""

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from cortex import logs
from cortex.ids import is_task_id
from cortex.v1 import node_pb2
from cortexd.ipc import messages as m
from cortexd.lifecycle import State, finished_state, folded_output
from cortexd.store import StaleWrite, Store, TaskRow
from cortexd.store.base import pack_row

#: Frame kinds a shard writes itself.
WRITTEN = frozenset({"started", "output", "finished"})
MAX_PIPELINE = 64
MAX_SESSION_BYTES = 512 << 10
#: Bytes of frames waiting in all of one shard's sessions, at most (one frame over).
MAX_SHARD_BYTES = 32 << 20
MAX_TRACKED = 20_000
#: How long a closing session waits for its writes before it says DETACH anyway (the
#: late outcomes still reach control when they commit).
DRAIN_S = 10.0


class Tracker:
    """The tasks of one session whose frames go to the control process from now on."""

    __slots__ = ("tasks",)

    def __init__(self) -> None:
        self.tasks: set[str] | None = set()  # None: overflowed, write nothing here

    def ours(self, task_id: str) -> bool:
        return self.tasks is not None and is_task_id(task_id) and task_id not in self.tasks

    def to_control(self, task_id: str) -> None:
        if self.tasks is not None:
            self.tasks.add(task_id)
            if len(self.tasks) > MAX_TRACKED:
                self.tasks = None


def _now_ms() -> int:
    return int(time.time() * 1000)


class ShardWrites:
    """The shard's side of the store: the writes a node's frames cause."""

    def __init__(self, store: Store, now_ms: Callable[[], int] = _now_ms,
                 max_bytes: int = MAX_SHARD_BYTES) -> None:
        self.store = store
        self.now_ms = now_ms
        self.counts = {"written": 0, "to_control": 0, "failed": 0}
        self.max_bytes = max_bytes
        self.held = 0  # bytes of frames waiting in the sessions' pipelines
        self.waiting: set[asyncio.Event] = set()  # sessions waiting for the shard's room

    def release(self, size: int) -> None:
        self.held -= size
        if self.held < self.max_bytes and self.waiting:
            for room in self.waiting:
                room.set()
            self.waiting.clear()

    def start(self, epoch: int, frame: node_pb2.NodeFrame, kind: str) -> "asyncio.Future[Any]":
        """Begin the write ``frame`` causes (it reaches the store's queue in call order)."""
        store = self.store
        if kind == "started":
            s = frame.started
            coro: Any = store.transition(s.task_id, attempt=s.attempt, node_epoch=epoch,
                                         to=State.RUNNING, now_ms=self.now_ms())
        elif kind == "output":
            o = frame.output
            coro = store.append_output(o.task_id, o.attempt, epoch, o.offset, o.data)
        else:
            f = frame.finished
            coro = store.end_attempt(
                f.task_id, attempt=f.attempt, node_epoch=epoch,
                to=finished_state(f.kind, f.exit_code, False), exit_code=f.exit_code,
                reason=f.reason, output_end=f.output_end,
                output=folded_output(f.output, f.output_end), now_ms=self.now_ms())
        job: asyncio.Future[Any] = asyncio.ensure_future(coro)
        return job

    def outcome(self, kind: str, frame: node_pb2.NodeFrame, result: Any
                ) -> tuple[list[Any] | None, bytes | None]:
        """What a committed write means: the WROTE fields for control (None: send the
        frame to control as it is) and the ack for the node (None: none from here)."""
        if kind == "started":
            if not isinstance(result, TaskRow):
                return None, None
            return [pack_row(result)], None
        if kind == "output":
            o = frame.output
            return [list(result)], node_pb2.HubFrame(ack=node_pb2.OutputAck(
                task_id=o.task_id, attempt=o.attempt, offset=result[1])).SerializeToString()
        f = frame.finished
        appended = (None if result.appended is None else str(result.appended)
                    if isinstance(result.appended, StaleWrite) else list(result.appended))
        if not isinstance(result.ended, TaskRow):
            # Not tried (control decides the end) or refused (control records it): either
            # way control answers the node.
            ended = None if result.ended is None else str(result.ended)
            return [appended, ended], None
        return [appended, pack_row(result.ended)], node_pb2.HubFrame(
            finished_ack=node_pb2.FinishedAck(task_id=f.task_id,
                                              attempt=f.attempt)).SerializeToString()


def task_of(frame: node_pb2.NodeFrame, kind: str) -> str:
    return str(getattr(frame, kind).task_id)


Item = tuple[str, bytes, node_pb2.NodeFrame, "asyncio.Future[Any] | None"]


class Pipeline:
    """One session's frames in the node's order: written here or forwarded, each
    answered in turn by one completer."""

    def __init__(self, node_id: str, epoch: int, writes: ShardWrites, tracker: Tracker,
                 push: Callable[[bytes], bool], send: Callable[[bytes], Any]) -> None:
        self.node_id, self.epoch = node_id, epoch
        self.writes = writes
        self.tracker = tracker
        self.push = push  # a frame to the node
        self.send = send  # a record to control (async)
        self.items: deque[Item] = deque()
        self.bytes = 0  # of the frames in items
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task = asyncio.ensure_future(self._complete())
        self._late_sends: set[asyncio.Future[Any]] = set()
        self.log = logs.get()

    def _fits(self) -> bool:
        if self.writes.held >= self.writes.max_bytes:
            return False
        return not self.items or (len(self.items) < MAX_PIPELINE
                                  and self.bytes < MAX_SESSION_BYTES)

    def room(self) -> "asyncio.Future[Any] | None":
        """None when a frame may be queued now, else what to wait for."""
        if self._fits():
            return None
        return asyncio.ensure_future(self._wait_room())

    async def _wait_room(self) -> None:
        while not self._fits():
            self._room.clear()
            if self.writes.held >= self.writes.max_bytes:
                self.writes.waiting.add(self._room)
            await self._room.wait()

    def put(self, raw: bytes, frame: node_pb2.NodeFrame, kind: str) -> None:
        job = None
        if kind in WRITTEN and self.tracker.ours(task_of(frame, kind)):
            job = self.writes.start(self.epoch, frame, kind)
        elif kind in WRITTEN:
            self.tracker.to_control(task_of(frame, kind))
        self.items.append((kind, raw, frame, job))
        self.bytes += len(raw)
        self.writes.held += len(raw)
        self._idle.clear()
        self._wake.set()

    async def close(self) -> None:
        """Wait (at most ``DRAIN_S``) for the queued frames to be answered, then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), DRAIN_S)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for kind, raw, frame, job in self.items:  # still not committed: tell control later
            if job is not None:
                job.add_done_callback(functools.partial(self._late, kind, raw, frame))
        self.writes.release(self.bytes)
        self.items.clear()
        self.bytes = 0

    def _late(self, kind: str, raw: bytes, frame: node_pb2.NodeFrame,
              job: "asyncio.Future[Any]") -> None:
        if job.cancelled():
            return
        send = asyncio.ensure_future(self.send(self._record(kind, raw, frame, job, ack=False)))
        self._late_sends.add(send)
        send.add_done_callback(self._late_sends.discard)

    async def _complete(self) -> None:
        while True:
            if not self.items:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            kind, raw, frame, job = self.items[0]
            if job is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(job)
            # Sent, then let go: cancelled while control's ring is full (close), the
            # frame is still in items, and close sends its record later.
            await self.send(self._record(kind, raw, frame, job, ack=True))
            self.items.popleft()
            self.bytes -= len(raw)
            self.writes.release(len(raw))
            self._room.set()

    def _record(self, kind: str, raw: bytes, frame: node_pb2.NodeFrame,
                job: "asyncio.Future[Any] | None", ack: bool) -> bytes:
        if job is None:
            return m.pack(m.FRAME, self.node_id, self.epoch, raw)
        counts = self.writes.counts
        if job.cancelled():
            fields, reply = None, None
        elif (exc := job.exception()) is not None:
            if not isinstance(exc, StaleWrite):
                counts["failed"] += 1
                self.log.warning("shard_write_failed", node=self.node_id, kind=kind,
                                 task=task_of(frame, kind), error=f"{type(exc).__name__}: {exc}")
            fields, reply = None, None
        else:
            fields, reply = self.writes.outcome(kind, frame, job.result())
        if fields is None:
            self.tracker.to_control(task_of(frame, kind))
            counts["to_control"] += 1
            return m.pack(m.FRAME, self.node_id, self.epoch, raw)
        # A Finished answered from here is written; one left to control (refused, or its
        # end needs a decision) is control's.
        counts["to_control" if kind == "finished" and reply is None else "written"] += 1
        if reply is not None and ack and not (kind == "output" and self._finished_next(frame)):
            self.push(reply)
        return m.pack(m.WROTE, self.node_id, self.epoch, raw, *fields)

    def _finished_next(self, frame: node_pb2.NodeFrame) -> bool:
        """The task's Finished is queued behind this output: its FinishedAck (after the
        end is durable) ends the task at the node, which needs no OutputAck."""
        o = frame.output
        for kind, _, later, _ in self.items:
            if kind == "finished" and later.finished.task_id == o.task_id \
                    and later.finished.attempt == o.attempt:
                return True
        return False
