"""SubmitMany: up to ``max_submit_many`` tasks in one call, each accepted or refused alone.

Invariants:

- A call over the limit is refused whole (the servicer checks it, with the limit in
  the message); within the limit every task gets its own outcome, in request order.
- The tasks of one call are created side by side, so they share the store's group
  commits (one transaction per ``store_batch_max_rows``) instead of one commit each;
  those that find a free node are inserted placed (placement.py ``admit``).
- An outcome of "submitted" means the task is durable: it is reported only after the
  commit that made it so. A task whose write failed is reported with its error and
  was not stored — or, when the commit outcome is unknown (UNAVAILABLE), may have
  been: the caller retries with the same idempotency key and gets the same task.
- The queue bound holds across concurrent calls: room is reserved for a call's
  tasks before any of them is written, and the tasks past the room are refused
  RESOURCE_EXHAUSTED (the others of the call go in).
"""

import asyncio
from dataclasses import dataclass

from cortexd.control.errors import RequestError
from cortexd.control.placement import Placement
from cortexd.control.state import HubState
from cortexd.control.tasks import admit, check_deliverable
from cortexd.store import StoreError, TaskRow

#: Tasks in one SubmitMany, at most (a gRPC request is bounded by max_frame_bytes too).
MAX_SUBMIT_MANY = 1000


@dataclass(frozen=True, slots=True)
class Refused:
    """A task of a SubmitMany that was not taken: a grpc status code name and why."""

    code: str
    message: str


Outcome = tuple[TaskRow, bool] | Refused


class Intake:
    """Takes in batches of tasks; holds the queue room reserved by calls in flight."""

    def __init__(self, state: HubState, placement: Placement | None = None) -> None:
        self.state = state
        self.placement = placement
        self.reserved = 0

    def room(self) -> int:
        return max(0, self.state.settings.max_queued_tasks - len(self.state.queue)
                   - self.reserved)

    async def submit_many(self, items: list[TaskRow | Refused]) -> list[Outcome]:
        """Create every valid task of ``items`` (a refusal passes through as it is)."""
        take = min(self.room(), sum(1 for i in items if isinstance(i, TaskRow)))
        self.reserved += take
        try:
            calls: list[asyncio.Future[tuple[TaskRow, bool]] | Refused] = []
            left = take
            full = Refused("RESOURCE_EXHAUSTED", "queue is full "
                           f"({self.state.settings.max_queued_tasks} tasks)")
            for item in items:
                if isinstance(item, Refused):
                    calls.append(item)
                elif left == 0:
                    calls.append(full)
                else:
                    left -= 1
                    calls.append(asyncio.ensure_future(self._create(item)))
            futures = [c for c in calls if not isinstance(c, Refused)]
            await asyncio.gather(*futures, return_exceptions=True)
        finally:
            self.reserved -= take
        return [c if isinstance(c, Refused) else _outcome(c) for c in calls]

    async def _create(self, row: TaskRow) -> tuple[TaskRow, bool]:
        # Reserved room: the queue check of TaskService.submit cannot refuse it, so go
        # around it.
        st = self.state
        check_deliverable(st, row)
        # The task count is reserved for the call; the bytes are checked per task.
        if (full := st.queue.room_for(row, st.settings.max_queued_tasks + self.reserved,
                                      st.settings.max_queued_bytes)) is not None:
            raise RequestError("RESOURCE_EXHAUSTED", full)
        stored, created = await admit(st, self.placement, row)
        return stored, not created


def _outcome(future: "asyncio.Future[tuple[TaskRow, bool]]") -> Outcome:
    e = future.exception()
    if e is None:
        return future.result()
    if isinstance(e, RequestError):
        return Refused(e.code, str(e))
    if isinstance(e, StoreError):
        return Refused("UNAVAILABLE", f"store: {e}; retry with the same idempotency key "
                       "(the task may have been stored)")
    return Refused("INTERNAL", f"{type(e).__name__}: {e}")
