"""A tool whose task is a coroutine: the easy way to write one (third parties, browserd).

Subclass :class:`AsyncTool`, set ``name``, ``version`` and ``input_schema``, and write
``async def run(self, task, io) -> int``: ``io.write`` is the task's output (spooled,
streamed, seen by the prompt detector like a PTY's), ``await io.read()`` the next input
typed to the task (``cortexctl input``), the return value its exit code. Register the
class under the entry-point group ``cortex.tools``; nothing else of Cortex is needed.

:class:`AsyncRunner` holds the runner contract (:mod:`nodeagent.tools.base`) for it:

- ``started(0)`` is reported before the coroutine runs (it runs no process of its own).
- The hard and idle timeouts of the task (:mod:`nodeagent.timeouts`) and ``cancel``
  cancel the coroutine (``CancelledError`` inside ``run``: clean up in ``finally``); if it
  has not ended ``2 × cancel_grace_s`` later, or at once on ``kill_now``, ``done`` resolves
  anyway and the coroutine is left cancelled (a coroutine cannot be killed).
- An exception out of ``run`` ends the task with exit 70 and the exception as its
  reason, and one line of output naming it; the agent carries on.
- Input waiting to be read is bounded (``MAX_PENDING_INPUT_BYTES``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Mapping
from typing import Any

from cortex.v1 import node_pb2
from nodeagent.runner import MAX_PENDING_INPUT_BYTES, TaskExit
from nodeagent.timeouts import Deadlines
from nodeagent.tools.base import EX_SOFTWARE, TaskEvents, ToolTask

EXITED = node_pb2.FINISH_KIND_EXITED
TIMED_OUT = node_pb2.FINISH_KIND_TIMED_OUT
CANCELLED_EXIT = -2  # as a PTY task ended by SIGINT reports


class ToolIO:
    """The task's terminal, for a coroutine: output out, typed input in."""

    def __init__(self, events: TaskEvents, on_output: Any) -> None:
        self._events = events
        self._on_output = on_output
        self._input: collections.deque[bytes] = collections.deque()
        self._input_bytes = 0
        self._arrived = asyncio.Event()

    def write(self, data: bytes | str) -> None:
        raw = data.encode() if isinstance(data, str) else bytes(data)
        if raw:
            self._on_output()
            self._events.output(raw)

    async def read(self) -> bytes:
        """The next piece of input typed to the task (waits for it)."""
        while not self._input:
            self._arrived.clear()
            await self._arrived.wait()
        data = self._input.popleft()
        self._input_bytes -= len(data)
        return data

    def offer(self, data: bytes) -> bool:
        if self._input_bytes + len(data) > MAX_PENDING_INPUT_BYTES:
            return False
        self._input.append(data)
        self._input_bytes += len(data)
        self._arrived.set()
        return True


class AsyncRunner:
    def __init__(self, tool: AsyncTool, task: ToolTask, events: TaskEvents) -> None:
        self._tool = tool
        self._task = task
        self._events = events
        self._loop = asyncio.get_running_loop()
        self._last_output = 0.0
        self.io = ToolIO(events, self._output_seen)
        self._deadlines = Deadlines(self._loop, hard_s=task.run.timeout_s,
                                    idle_s=task.run.idle_timeout_s,
                                    last_output=lambda: self._last_output,
                                    expire=lambda reason: self.cancel(TIMED_OUT, reason))
        self._ending: tuple[int, str] | None = None  # (kind, reason) of the first stop asked
        self._job: asyncio.Task[int] | None = None
        self._force: asyncio.TimerHandle | None = None
        self.done: asyncio.Future[TaskExit] = self._loop.create_future()

    pty_fd = -1
    protected_pids: frozenset[int] = frozenset()

    def _output_seen(self) -> None:
        self._last_output = self._loop.time()

    def start(self) -> None:
        self._events.started(0)
        self._deadlines.start()
        self._job = self._loop.create_task(self._tool.run(self._task, self.io),
                                           name=f"tool-{self._tool.name}-{self._task.task_id}")
        self._job.add_done_callback(self._finished)

    def _finished(self, job: asyncio.Task[int]) -> None:
        self._deadlines.stop()
        if self._force is not None:
            self._force.cancel()
        if job.cancelled():
            kind, reason = self._ending or (node_pb2.FINISH_KIND_CANCELLED, "cancelled")
            self._resolve(TaskExit(CANCELLED_EXIT, kind, reason))
            return
        err = job.exception()
        if err is not None:
            what = f"tool {self._tool.name} crashed: {type(err).__name__}: {err}"
            with contextlib.suppress(Exception):
                self._events.output(f"\r\nnodeagent: {what}\r\n".encode())
            self._resolve(TaskExit(EX_SOFTWARE, EXITED, what))
            return
        code = job.result()
        if self._ending is not None:  # asked to stop, and it returned instead of raising
            self._resolve(TaskExit(code if isinstance(code, int) else 0, *self._ending))
        elif isinstance(code, int) and not isinstance(code, bool):
            self._resolve(TaskExit(code, EXITED))
        else:
            self._resolve(TaskExit(EX_SOFTWARE, EXITED,
                                   f"tool {self._tool.name} returned {code!r}, not an exit code"))

    def _resolve(self, result: TaskExit) -> None:
        if not self.done.done():
            self.done.set_result(result)

    def cancel(self, kind: int, reason: str) -> None:
        if self._job is None or self._job.done() or self._ending is not None:
            return
        self._ending = (kind, reason)
        self._job.cancel()
        self._force = self._loop.call_later(2 * self._task.cancel_grace_s, self._give_up)

    def kill_now(self, kind: int, reason: str) -> None:
        if self._ending is None:
            self._ending = (kind, reason)
        if self._job is not None:
            self._job.cancel()
        self._give_up()

    def _give_up(self) -> None:
        kind, reason = self._ending or (node_pb2.FINISH_KIND_CANCELLED, "killed")
        self._deadlines.stop()
        self._resolve(TaskExit(CANCELLED_EXIT, kind, reason))

    def write_input(self, data: bytes) -> bool:
        if self.done.done():
            return False
        return self.io.offer(data)


class AsyncTool:
    """Base of a coroutine tool; subclasses set the three declarations and ``run``."""

    name: str = ""
    version: str = "0"
    input_schema: Mapping[str, Any] = {"type": "string"}

    async def run(self, task: ToolTask, io: ToolIO) -> int:
        raise NotImplementedError

    def runner(self, task: ToolTask, events: TaskEvents) -> AsyncRunner:
        return AsyncRunner(self, task, events)
