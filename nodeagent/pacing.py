"""Pacing of the live stream: the per-task rate limit and the progress reports.

DESIGN.md §5: the hub gets a live stream capped per task (default 15,000 B/s, burst
64 KiB); what is held back stays in the spool. docs/protocol.md, "Rate limit", is the
contract; this module is the node's half. Invariants:

- A running task's output goes to the hub through its *live* bucket. Once the task has
  ended, the rest of its spool goes through a *catch-up* bucket (default 1 MiB/s, burst
  1 MiB), so the hub holds the complete output soon after the exit ("nothing lost")
  and ``TaskFinished`` — which follows the last byte — is not delayed by minutes.
- The pacer only ever says "not now" and arms one timer to wake the sender when the
  earliest throttled task may send again; it never blocks the sender, and the task
  table gives a throttled task's turn to the next task.
- Small sends are not split into dribbles: a task waits until ``MIN_SEND_BYTES`` (or all
  it has pending, if less) may go at once.
- ``held_back_bytes`` of a task is what its spool holds beyond what the live stream
  has sent (``output_end - sent``). Every ``progress_interval_s`` the link sends a
  ``TaskProgress`` for each task whose ``(spooled, held back)`` changed since its last
  report, so the hub's numbers settle on the final values (0 held back once drained).
"""

import asyncio
import time
from collections.abc import Callable, Iterable

from cortex.v1 import node_pb2
from nodeagent.ratelimit import TokenBucket
from nodeagent.tasktable import TaskEntry, TaskKey

MIN_SEND_BYTES = 4096


class StreamPacer:
    def __init__(self, *, rate_bytes_s: int, burst_bytes: int, catchup_rate_bytes_s: int,
                 catchup_burst_bytes: int, wake: asyncio.Event,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._live = (rate_bytes_s, burst_bytes)
        self._catchup = (catchup_rate_bytes_s, catchup_burst_bytes)
        self._wake = wake
        self._clock = clock
        self._buckets: dict[TaskKey, tuple[bool, TokenBucket]] = {}  # key -> (catch-up?, b)
        self._reported: dict[TaskKey, tuple[int, int]] = {}
        self._next_wake: float | None = None  # the earliest a throttled task may send
        self._timer: asyncio.TimerHandle | None = None
        self.throttled = 0  # times a task was passed over (for logs and tests)

    def _bucket(self, e: TaskEntry, now: float) -> TokenBucket:
        held = self._buckets.get(e.key)
        if held is None or held[0] != e.finished:
            rate, burst = self._catchup if e.finished else self._live
            held = (e.finished, TokenBucket.full(rate, burst, now))
            self._buckets[e.key] = held
        return held[1]

    def budget(self, e: TaskEntry, pending: int) -> int:
        """How many of ``pending`` bytes of ``e`` may be sent now (0: pass it over)."""
        now = self._clock()
        bucket = self._bucket(e, now)
        want = min(pending, MIN_SEND_BYTES)
        available = bucket.available(now)
        if available >= want:
            return available
        self.throttled += 1
        at = now + bucket.wait_s(want, now)
        if self._next_wake is None or at < self._next_wake:
            self._next_wake = at
        return 0

    def sent(self, key: TaskKey, n: int) -> None:
        held = self._buckets.get(key)
        if held is not None:
            held[1].take(n, self._clock())

    def idle(self) -> None:
        """The sender found nothing to send: wake it when a throttled task may go again."""
        if self._next_wake is None:
            return
        at, self._next_wake = self._next_wake, None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # driven without a loop (unit tests): the caller polls
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_later(max(0.0, at - self._clock()), self._wake.set)

    def forget(self, key: TaskKey) -> None:
        self._buckets.pop(key, None)
        self._reported.pop(key, None)

    def new_session(self) -> None:
        """A new hub session knows nothing: report every task's progress again."""
        self._reported.clear()

    def progress(self, entries: Iterable[TaskEntry]) -> list[node_pb2.NodeFrame]:
        """``TaskProgress`` frames for the streaming tasks whose numbers changed."""
        frames = []
        for e in entries:
            if not e.streaming:
                continue
            now = (e.output_end, max(0, e.output_end - e.sent))
            if self._reported.get(e.key) == now:
                continue
            self._reported[e.key] = now
            frames.append(node_pb2.NodeFrame(progress=node_pb2.TaskProgress(
                task_id=e.task_id, attempt=e.attempt, spooled_bytes=now[0],
                held_back_bytes=now[1])))
        return frames

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
