"""The tasks this node holds and what to send about them next: pure, no I/O.

An entry lives from the moment its attempt starts until the hub's ``FinishedAck`` (or a
``KILL`` verdict). Per entry the table tracks the spool's end, the hub's cumulative ack,
and, for the current session only, the next offset to send and whether ``TaskFinished``
went out. Invariants:

- Output is offered in order, in frames of at most ``max_frame_bytes``, and never beyond
  ``acked + window_bytes``: a slow or silent hub holds the node's memory and the stream's
  buffers to one window per task; the rest waits on disk.
- ``TaskFinished`` is offered only after the last byte of output was offered.
- A new session streams nothing about an old task until the hub's verdict says ``KEEP``;
  then streaming restarts at the hub's ``resume_offset``, whatever the node believed.
- Tasks take turns (round robin), so one chatty task cannot starve the others; a task
  the rate limit holds back (``next_send``'s ``budget``) loses its turn, not the others'.
- Folding (issue 9, when the hub takes it): a new task's output is not offered while it
  is ``holding`` (the host's short window after its start); a finished task whose
  unsent output is at most ``fold_bytes`` — within its window and its rate budget —
  gets it inside its ``TaskFinished`` instead of in output frames.
"""

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from cortex.v1 import node_pb2

TaskKey = tuple[str, int]


@dataclass(slots=True)
class TaskEntry:
    task_id: str
    attempt: int
    output_end: int = 0
    acked: int = 0
    sent: int = 0
    finished: bool = False
    exit_code: int = 0
    kind: int = node_pb2.FINISH_KIND_UNSPECIFIED
    reason: str = ""
    streaming: bool = False  # the current session may stream this task
    finish_sent: bool = False  # TaskFinished went out in the current session
    holding: bool = False  # a new task's output waits: it may end and fold (issue 9)

    @property
    def key(self) -> TaskKey:
        return (self.task_id, self.attempt)

    def report(self) -> node_pb2.TaskReport:
        return node_pb2.TaskReport(
            task_id=self.task_id, attempt=self.attempt, acked_offset=self.acked,
            output_end=self.output_end, finished=self.finished, exit_code=self.exit_code)


@dataclass(frozen=True, slots=True)
class SendOutput:
    key: TaskKey
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class SendFinished:
    """``TaskFinished``; with ``offset`` < the entry's ``output_end`` it carries the
    output from ``offset`` to the end (folded, issue 9)."""

    entry: TaskEntry
    offset: int = -1


@dataclass(frozen=True, slots=True)
class VerdictOutcome:
    kept: list[TaskKey]
    killed: list[TaskKey]  # the caller kills, drops the spool, and calls remove()
    clamped: list[tuple[TaskKey, int, int]]  # (key, resume_offset asked, output_end held)


class TaskTable:
    def __init__(self, *, window_bytes: int, max_frame_bytes: int) -> None:
        if window_bytes < max_frame_bytes or max_frame_bytes <= 0:
            raise ValueError("need 0 < max_frame_bytes <= window_bytes")
        self._window = window_bytes
        self._max_frame = max_frame_bytes
        self._entries: dict[TaskKey, TaskEntry] = {}
        self._turns: deque[TaskKey] = deque()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[TaskEntry]:
        return iter(list(self._entries.values()))

    def get(self, key: TaskKey) -> TaskEntry | None:
        return self._entries.get(key)

    def add(self, entry: TaskEntry) -> TaskEntry:
        if entry.key in self._entries:
            raise ValueError(f"task {entry.key} is already held")
        self._entries[entry.key] = entry
        self._turns.append(entry.key)
        return entry

    def remove(self, key: TaskKey) -> TaskEntry | None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._turns.remove(key)
        return entry

    @property
    def running(self) -> int:
        return sum(1 for e in self._entries.values() if not e.finished)

    def reports(self) -> list[node_pb2.TaskReport]:
        return [e.report() for e in self._entries.values()]

    # ---- session ------------------------------------------------------------

    def new_session(self) -> None:
        """Forget per-session progress; nothing streams until verdicts arrive."""
        for e in self._entries.values():
            e.streaming = False
            e.finish_sent = False
            e.sent = e.acked

    def apply_verdicts(self, verdicts: Iterable[node_pb2.TaskVerdict]) -> VerdictOutcome:
        """Apply the Welcome's verdicts to every held task; no verdict means KILL."""
        keep = {(v.task_id, v.attempt): v.resume_offset for v in verdicts
                if v.verdict == node_pb2.VERDICT_KEEP}
        kept, killed, clamped = [], [], []
        for e in self._entries.values():
            if e.key not in keep:
                killed.append(e.key)
                continue
            resume = keep[e.key]
            if resume > e.output_end:  # the hub claims bytes we never produced
                clamped.append((e.key, resume, e.output_end))
                resume = e.output_end
            e.acked = e.sent = resume
            e.streaming = True
            kept.append(e.key)
        return VerdictOutcome(kept, killed, clamped)

    def admit(self, task_id: str, attempt: int) -> TaskEntry:
        """A task started in the current session: the hub knows nothing of its output yet."""
        return self.add(TaskEntry(task_id, attempt, streaming=True))

    # ---- progress -----------------------------------------------------------

    def output_appended(self, key: TaskKey, end: int) -> None:
        entry = self._entries.get(key)
        if entry is not None:
            entry.output_end = end

    def finished(self, key: TaskKey, *, exit_code: int, kind: int, reason: str) -> None:
        entry = self._entries.get(key)
        if entry is not None:
            entry.finished, entry.exit_code, entry.kind, entry.reason = (
                True, exit_code, kind, reason)

    def ack(self, key: TaskKey, offset: int) -> bool:
        """Apply a cumulative ack; True when it moved the window."""
        entry = self._entries.get(key)
        if entry is None:
            return False
        offset = min(offset, entry.output_end)
        if offset <= entry.acked:
            return False
        entry.acked = offset
        entry.sent = max(entry.sent, offset)
        return True

    def next_send(self, budget: Callable[[TaskEntry, int], int] | None = None,
                  fold_bytes: int = 0) -> SendOutput | SendFinished | None:
        """What to send next (advancing ``sent``), or None when nothing may go now.

        ``budget(entry, pending)`` says how many of ``pending`` sendable bytes the rate
        limit lets go now; a task with no budget is passed over (its turn goes to the
        next task), so a throttled task never holds up another."""
        for _ in range(len(self._turns)):
            key = self._turns[0]
            self._turns.rotate(-1)
            e = self._entries[key]
            if not e.streaming or (e.holding and not e.finished):
                continue
            limit = min(e.output_end, e.acked + self._window)
            if (folded := self._fold(e, limit, budget, fold_bytes)) is not None:
                return folded
            if e.sent < limit:
                allowed = limit - e.sent if budget is None else budget(e, limit - e.sent)
                if allowed <= 0:
                    continue
                length = min(self._max_frame, limit - e.sent, allowed)
                offset, e.sent = e.sent, e.sent + length
                return SendOutput(key, offset, length)
            if e.finished and not e.finish_sent and e.sent >= e.output_end:
                e.finish_sent = True
                return SendFinished(e)
        return None

    @staticmethod
    def _fold(e: TaskEntry, limit: int, budget: Callable[[TaskEntry, int], int] | None,
              fold_bytes: int) -> SendFinished | None:
        pending = e.output_end - e.sent
        if not (e.finished and not e.finish_sent and 0 < pending <= fold_bytes
                and limit == e.output_end):
            return None
        if budget is not None and budget(e, pending) < pending:
            return None
        offset, e.sent, e.finish_sent = e.sent, e.output_end, True
        return SendFinished(e, offset)
