"""A task's hard and idle timeouts (issue 3, item 9).

- **Hard**: ``hard_s`` after the start, whatever the task does.
- **Idle**: ``idle_s`` without a byte of output. Output does not re-arm a timer per chunk
  (a chatty task would churn the loop's heap): one timer is armed for the earliest moment
  the task could be idle, and when it fires it re-arms for ``last output + idle_s`` if
  output came meanwhile (:func:`idle_deadline`).

Either expiry calls ``expire(reason)`` once; the runner then ends the whole tree (its
process group and session, and its cgroup) and reports ``TIMED_OUT`` with that reason.
"""

import asyncio
from collections.abc import Callable

TIMER_SLACK_S = 0.002  # loop timers may fire this early (millisecond rounding)


def hard_reason(hard_s: float) -> str:
    return f"hard timeout after {hard_s:g} s"


def idle_reason(idle_s: float) -> str:
    return f"idle timeout: no output for {idle_s:g} s"


def idle_deadline(started: float, last_output: float, idle_s: float) -> float:
    """When the task becomes idle if it prints nothing more (loop-clock seconds)."""
    return max(started, last_output) + idle_s


class Deadlines:
    def __init__(self, loop: asyncio.AbstractEventLoop, *, hard_s: float, idle_s: float,
                 last_output: Callable[[], float], expire: Callable[[str], None]) -> None:
        self._loop = loop
        self._hard_s = hard_s
        self._idle_s = idle_s
        self._last_output = last_output
        self._expire = expire
        self._started = 0.0
        self._hard: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = None
        self.expired = ""

    def start(self) -> None:
        self._started = self._loop.time()
        if self._hard_s > 0:
            self._hard = self._loop.call_later(self._hard_s, self._fire, hard_reason(self._hard_s))
        if self._idle_s > 0:
            self._idle = self._loop.call_at(self._started + self._idle_s, self._check_idle)

    def stop(self) -> None:
        for timer in (self._hard, self._idle):
            if timer is not None:
                timer.cancel()
        self._hard = self._idle = None

    def _check_idle(self) -> None:
        due = idle_deadline(self._started, self._last_output(), self._idle_s)
        if self._loop.time() >= due - TIMER_SLACK_S:
            self._fire(idle_reason(self._idle_s))
        else:
            self._idle = self._loop.call_at(due, self._check_idle)

    def _fire(self, reason: str) -> None:
        if self.expired:
            return
        self.expired = reason
        self.stop()
        self._expire(reason)
