"""What the status page shows, as one JSON-ready snapshot, and the throughput samples.

- Hosts: the live hub hosts (one alone; the cluster's when clustered).
- Shards and nodes: the Control API's own views (ShardService, NodeService), so the
  page and ``cortexctl shards|nodes`` agree; nodes summed (attached, draining, load)
  and listed (at most ``MAX_NODES`` rows, busiest first).
- Tasks by state: counted in the store (every state).
- Recent failures: the newest FAILED, LOST and TIMED_OUT tasks.
- Throughput: tasks that reached a terminal state on this host, per ``BUCKET_S``
  over the last ``WINDOW_S`` (:class:`Throughput`, fed by the state events the
  control process publishes; a task is counted once).
"""

import asyncio
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

from cortexd.lifecycle import State
from cortexd.store import TaskRow

if TYPE_CHECKING:
    from cortexd.control.hub import Hub

BUCKET_S = 10
WINDOW_S = 600
MAX_NODES = 200
MAX_FAILURES = 10
FAILED_STATES = (State.FAILED, State.LOST, State.TIMED_OUT)
_SEEN_MAX = 65_536


class Throughput:
    """Terminal tasks per bucket, last ``WINDOW_S`` (pure: the caller gives the clock)."""

    def __init__(self, bucket_s: int = BUCKET_S, window_s: int = WINDOW_S) -> None:
        self.bucket_s, self.window_s = bucket_s, window_s
        self.buckets: deque[list[int]] = deque()  # [bucket start (s), count]
        self.total = 0
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()

    def ended(self, task_id: str, attempt: int, now_s: float) -> None:
        key = (task_id, attempt)
        if key in self._seen:
            return
        self._seen[key] = None
        if len(self._seen) > _SEEN_MAX:
            self._seen.popitem(last=False)
        start = int(now_s // self.bucket_s) * self.bucket_s
        if self.buckets and self.buckets[-1][0] == start:
            self.buckets[-1][1] += 1
        else:
            self.buckets.append([start, 1])
        self.total += 1
        self._trim(now_s)

    def _trim(self, now_s: float) -> None:
        while self.buckets and self.buckets[0][0] < now_s - self.window_s:
            self.buckets.popleft()

    def series(self, now_s: float) -> list[dict[str, int]]:
        """Every bucket of the window, oldest first, empty ones as 0."""
        self._trim(now_s)
        have = {start: n for start, n in self.buckets}
        last = int(now_s // self.bucket_s) * self.bucket_s
        first = last - self.window_s + self.bucket_s
        return [{"t": t, "finished": have.get(t, 0)}
                for t in range(first, last + 1, self.bucket_s)]

    def on_publish(self, task_id: str, event: tuple[str, Any]) -> None:
        kind, payload = event
        if kind == "state" and isinstance(payload, TaskRow) and payload.state.terminal:
            self.ended(task_id, payload.attempt, time.time())


class StatusSource:
    """Snapshots for the page; one at a time, and a snapshot younger than ``CACHE_S`` is
    served again (each counts every state in the store: many open pages must not
    multiply that)."""

    CACHE_S = 1.0

    def __init__(self, hub: "Hub") -> None:
        self.hub = hub
        self.throughput = Throughput()
        hub.state.on_publish.append(self.throughput.on_publish)
        self._lock = asyncio.Lock()
        self._last: tuple[float, dict[str, Any]] | None = None

    async def snapshot(self) -> dict[str, Any]:
        async with self._lock:
            if self._last is not None and time.monotonic() - self._last[0] < self.CACHE_S:
                return self._last[1]
            snap = await self._build()
            self._last = (time.monotonic(), snap)
            return snap

    async def _build(self) -> dict[str, Any]:
        hub, st = self.hub, self.hub.state
        shards = await hub.shards.list()
        nodes = await hub.nodes.list()
        counts = {s.value: await st.store.count_in(frozenset({s})) for s in State}
        failures: list[TaskRow] = []
        for state in FAILED_STATES:
            failures += await st.store.list_tasks(state=state, limit=MAX_FAILURES)
        failures.sort(key=lambda t: (t.updated_ms, t.task_id), reverse=True)
        attached = [n for n in nodes if n.attached]
        busiest = sorted(nodes, key=lambda n: (not n.attached, -n.running, n.node_id))
        now = time.time()
        return {
            "host": st.hub_id,
            "hosts": sorted(await st.coord.live_hosts()),
            "generated_ms": int(now * 1000),
            "shards": [{"hub_id": s.hub_id, "shard": s.shard, "pid": s.pid, "alive": s.alive,
                        "draining": s.draining, "nodes": s.nodes, "restarts": s.restarts}
                       for s in shards],
            "nodes": {
                "total": len(nodes), "attached": len(attached),
                "draining": sum(1 for n in attached if n.draining),
                "running": sum(n.running for n in attached),
                "capacity": sum(n.capacity for n in attached),
                "list": [{"node_id": n.node_id, "attached": n.attached,
                          "draining": n.draining, "shard": n.shard, "running": n.running,
                          "capacity": n.capacity, "hub_id": n.hub_id}
                         for n in busiest[:MAX_NODES]],
            },
            "tasks": counts,
            "failures": [{"task_id": t.task_id, "state": t.state.value, "node_id": t.node_id,
                          "reason": t.reason[:200], "exit_code": t.exit_code,
                          "updated_ms": t.updated_ms} for t in failures[:MAX_FAILURES]],
            "throughput": {"bucket_s": self.throughput.bucket_s,
                           "total": self.throughput.total,
                           "series": self.throughput.series(now)},
        }
