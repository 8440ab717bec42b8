"""What the node sends the hub next: control frames, then output and finishes.

The link pulls frames one at a time (:meth:`Outbox.next_frame`, through
``TaskHost.next_frame``); the host and the tasks push control frames
(:meth:`Outbox.queue`). Invariants:

- Control frames (started, rejected, heartbeat, draining, prompts, log chunks) go
  before output frames, and at most ``MAX_CONTROL_FRAMES`` wait (a full queue is a
  :class:`NodeAgentError`, not unbounded memory). A new session clears the queue:
  frames for the old session mean nothing to the new one.
- Output and ``TaskFinished`` are read back from the spool at the offsets the task
  table chooses (:mod:`nodeagent.tasktable`), within the pacer's rate budget, so a
  resend after reconnect is byte-identical.
- Folding (issue 9, when the Welcome says ``fold_frames``): for ``fold_window_ms``
  after its start a task's ``TaskStarted`` and output wait (:meth:`hold`). A task
  that ends within the window never sends ``TaskStarted`` (its ``TaskFinished`` says
  it ran) and its output, up to ``fold_output_bytes``, travels inside the
  ``TaskFinished``: one frame instead of three. At the window's end a running task's
  ``TaskStarted`` is queued, then its output.
"""

import asyncio
import collections
import contextlib

from cortex.v1 import node_pb2
from nodeagent.config import AgentConfig
from nodeagent.errors import NodeAgentError
from nodeagent.pacing import StreamPacer
from nodeagent.spool import TaskSpool
from nodeagent.tasktable import SendFinished, SendOutput, TaskKey, TaskTable

MAX_CONTROL_FRAMES = 10_000


class Outbox:
    def __init__(self, config: AgentConfig, table: TaskTable, spools: dict[TaskKey, TaskSpool],
                 pacer: StreamPacer, counts: "collections.Counter[str]",
                 wake: asyncio.Event) -> None:
        self._config = config
        self._table = table
        self._spools = spools  # the host's: every live attempt's spool
        self._pacer = pacer
        self._counts = counts
        self._wake = wake  # set whenever next_frame() may have something new
        self._control: collections.deque[node_pb2.NodeFrame] = collections.deque()
        self.fold = False  # the hub's Welcome.fold_frames, and fold_window_ms > 0
        self._held_started: dict[TaskKey, node_pb2.NodeFrame | None] = {}
        self._hold_timers: dict[TaskKey, asyncio.TimerHandle] = {}

    def new_session(self, fold_frames: bool) -> None:
        self._control.clear()  # frames for the old session mean nothing to the new one
        self.fold = fold_frames and self._config.fold_window_ms > 0

    def queue(self, frame: node_pb2.NodeFrame) -> None:
        if len(self._control) >= MAX_CONTROL_FRAMES:
            raise NodeAgentError("control frame queue is full")
        self._control.append(frame)
        self._wake.set()

    def next_frame(self) -> node_pb2.NodeFrame | None:
        if self._control:
            return self._control.popleft()
        fold = self._config.fold_output_bytes if self.fold else 0
        while (step := self._table.next_send(self._pacer.budget, fold)) is not None:
            if isinstance(step, SendFinished):
                e = step.entry
                data = b""
                if 0 <= step.offset < e.output_end:
                    data = self._spools[e.key].read(step.offset, e.output_end - step.offset)
                    self._pacer.sent(e.key, len(data))
                    self._counts["folded_output"] += 1
                return node_pb2.NodeFrame(finished=node_pb2.TaskFinished(
                    task_id=e.task_id, attempt=e.attempt, kind=node_pb2.FinishKind.Name(e.kind),
                    exit_code=e.exit_code, output_end=e.output_end, reason=e.reason,
                    output=data))
            assert isinstance(step, SendOutput)
            data = self._spools[step.key].read(step.offset, step.length)
            self._pacer.sent(step.key, len(data))
            if data:
                return node_pb2.NodeFrame(output=node_pb2.TaskOutput(
                    task_id=step.key[0], attempt=step.key[1], offset=step.offset, data=data))
        self._pacer.idle()
        return None

    # ---- folding ----------------------------------------------------------------

    def hold(self, key: TaskKey) -> None:
        """A task starts while folding is on: its Started and output wait for the window."""
        entry = self._table.get(key)
        assert entry is not None
        entry.holding = True
        self._held_started[key] = None  # the frame, once the process runs
        self._hold_timers[key] = asyncio.get_running_loop().call_later(
            self._config.fold_window_ms / 1000, self._release_hold, key)

    def started(self, key: TaskKey, frame: node_pb2.NodeFrame) -> None:
        """The task's ``TaskStarted``: queued now, or when its fold window ends."""
        if key in self._held_started:
            self._held_started[key] = frame  # sent when the fold window ends, if it runs on
        else:
            self.queue(frame)

    def _release_hold(self, key: TaskKey) -> None:
        """The fold window ended with the task still running: Started, then its output."""
        self._hold_timers.pop(key, None)
        frame = self._held_started.pop(key, None)
        if frame is not None:
            with contextlib.suppress(NodeAgentError):
                self.queue(frame)
        entry = self._table.get(key)
        if entry is not None:
            entry.holding = False
        self._wake.set()

    def end_hold(self, key: TaskKey) -> None:
        """The task ended (or left) within its fold window: no Started is sent."""
        if (timer := self._hold_timers.pop(key, None)) is not None:
            timer.cancel()
        if self._held_started.pop(key, None) is not None:
            self._counts["folded_started"] += 1
        entry = self._table.get(key)
        if entry is not None:
            entry.holding = False
