"""Fan-out of task state changes and output to Watch streams, bounded.

Each watcher has a bounded queue. A watcher that falls behind is marked
*lagged* and its queue is cleared instead of growing: the Watch handler then
catches up from the store, so a slow client costs reads, never memory, and never
misses a byte.
"""

import asyncio
from dataclasses import dataclass, field
from typing import Any

WATCHER_QUEUE = 256


@dataclass(eq=False)
class Watcher:
    task_id: str
    queue: asyncio.Queue[tuple[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=WATCHER_QUEUE))
    lagged: bool = False

    def offer(self, event: tuple[str, Any]) -> None:
        if self.lagged:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.lagged = True
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(("lagged", None))


class Watchers:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._by_task: dict[str, set[Watcher]] = {}
        self.count = 0

    def add(self, task_id: str) -> Watcher | None:
        if self.count >= self.limit:
            return None
        w = Watcher(task_id)
        self._by_task.setdefault(task_id, set()).add(w)
        self.count += 1
        return w

    def remove(self, w: Watcher) -> None:
        group = self._by_task.get(w.task_id)
        if group and w in group:
            group.discard(w)
            self.count -= 1
            if not group:
                del self._by_task[w.task_id]

    def publish(self, task_id: str, event: tuple[str, Any]) -> None:
        for w in self._by_task.get(task_id, ()):
            w.offer(event)
