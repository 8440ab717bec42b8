"""Run: wait for a submitted task's end, bounded by the caller's deadline.

The servicer registers a watcher before it submits (so the task's terminal state
cannot be published unseen) and then waits here. The wait re-reads the task from
the store when its watcher lagged, and every ``POLL_S`` anyway: the task may run
on another host whose events do not reach this one (clustered), and the store has
the truth. A wait that reaches ``deadline`` returns the task as it is; the caller
answers DEADLINE_EXCEEDED and the task goes on.

A Run whose call is dropped (client gone, deadline passed inside gRPC) cancels its
task only when it asked to (``cancel_on_drop``); the cancel is spawned, so the
dropped handler's own cancellation does not cut it short.
"""

import asyncio
import time
from typing import Any

from cortexd.control.errors import RequestError
from cortexd.control.tasks import TaskService
from cortexd.control.watchers import Watcher
from cortexd.store import TaskRow

POLL_S = 2.0
#: The hub answers DEADLINE_EXCEEDED itself this long before the caller's deadline
#: (at most; a tenth of the time left when that is less), so that the answer, with
#: the task id in it, arrives before the caller's own timer fires.
DEADLINE_MARGIN_S = 0.25

_drop_cancels: set["asyncio.Task[Any]"] = set()


def wait_deadline(time_remaining_s: float | None) -> float | None:
    """The monotonic time at which a Run stops waiting (None: no deadline)."""
    if time_remaining_s is None:
        return None
    margin = min(DEADLINE_MARGIN_S, time_remaining_s / 10)
    return time.monotonic() + max(0.0, time_remaining_s - margin)


async def wait_end(tasks: TaskService, watcher: Watcher, task: TaskRow,
                   deadline: float | None) -> TaskRow:
    """``task`` once it is terminal, or as it is at ``deadline``."""
    while not task.state.terminal:
        timeout = POLL_S
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
            if timeout <= 0:
                return task
        try:
            kind, payload = await asyncio.wait_for(watcher.queue.get(), timeout)
        except TimeoutError:
            task = await tasks.get(task.task_id)
            continue
        if kind == "lagged":
            watcher.lagged = False
            task = await tasks.get(task.task_id)
        elif kind == "state" and isinstance(payload, TaskRow):
            task = payload
    return task


def cancel_dropped(tasks: TaskService, task_id: str) -> None:
    """The Run call of ``task_id`` ended before the task, and it asked for a cancel."""
    async def cancel() -> None:
        try:
            await tasks.cancel(task_id, "its Run call ended before it (cancel_on_drop)")
        except RequestError:
            pass  # it ended meanwhile
        except Exception:
            tasks.state.log.exception("run_cancel_failed", task=task_id)
    task = asyncio.get_running_loop().create_task(cancel())
    _drop_cancels.add(task)
    task.add_done_callback(_drop_cancels.discard)
