"""Fan-out of task state changes and output to Watch streams, bounded.

Watchers are bounded in total and per client (the caller's credential, from the
auth interceptor, never the request): one client holding many Watch streams cannot
lock the others out. Each watcher has a bounded queue. A watcher that falls behind is marked
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
    client: str = ""
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
    def __init__(self, limit: int, per_client: int | None = None) -> None:
        self.limit = limit
        self.per_client = limit if per_client is None else per_client
        self._by_task: dict[str, set[Watcher]] = {}
        self._by_client: dict[str, int] = {}
        self.count = 0

    def refusal(self, client: str) -> str | None:
        """Why ``client`` may not add a watcher now, or None."""
        if self._by_client.get(client, 0) >= self.per_client:
            return (f"client {client or 'anonymous'!r} already holds {self.per_client} "
                    "Watch/Run streams (max_watchers_per_client); end one first")
        if self.count >= self.limit:
            return f"the hub holds {self.limit} Watch/Run streams (max_watchers); retry later"
        return None

    def add(self, task_id: str, client: str = "") -> Watcher | None:
        if self.refusal(client) is not None:
            return None
        w = Watcher(task_id, client)
        self._by_task.setdefault(task_id, set()).add(w)
        self._by_client[client] = self._by_client.get(client, 0) + 1
        self.count += 1
        return w

    def remove(self, w: Watcher) -> None:
        group = self._by_task.get(w.task_id)
        if group and w in group:
            group.discard(w)
            self.count -= 1
            left = self._by_client[w.client] - 1
            if left:
                self._by_client[w.client] = left
            else:
                del self._by_client[w.client]
            if not group:
                del self._by_task[w.task_id]

    def publish(self, task_id: str, event: tuple[str, Any]) -> None:
        for w in self._by_task.get(task_id, ()):
            w.offer(event)
