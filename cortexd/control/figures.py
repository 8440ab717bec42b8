"""What the control process reports on its HTTP port: gauges read at scrape time and
readiness.

The control process owns the figures no shard sees: tasks by active state (from
the store, so a cluster's hosts agree), the heartbeat interval, the bytes nodes
hold back, shards alive, and its own full-ring waits towards the shards. They are
read when scraped instead of kept up to date on every event. A store that does
not answer within ``store_probe_s`` makes the host not ready (and
``cortex_store_reachable`` 0); the scrape still answers.
"""

import asyncio
from typing import TYPE_CHECKING

from cortexd.lifecycle import State
from cortexd.metrics import hub as m
from cortexd.web.health import Readiness

if TYPE_CHECKING:
    from cortexd.control.hub import Hub

COUNTED_STATES = (State.QUEUED, State.ASSIGNED, State.RUNNING)


class ControlFigures:
    def __init__(self, hub: "Hub", store_probe_s: float = 2.0) -> None:
        self.hub = hub
        self.host = hub.state.hub_id
        self.store_probe_s = store_probe_s
        self.stopping = False
        self._down_waits: dict[int, int] = {}

    async def _count_active(self) -> dict[State, int] | None:
        try:
            counts = await asyncio.wait_for(asyncio.gather(
                *(self.hub.state.store.count_in(frozenset({s})) for s in COUNTED_STATES)),
                self.store_probe_s)
        except Exception:  # unreachable, timed out, or failing: all the same to a probe
            return None
        return dict(zip(COUNTED_STATES, counts, strict=True))

    async def refresh(self) -> None:
        hub, st, host = self.hub, self.hub.state, self.host
        counts = await self._count_active()
        m.STORE_REACHABLE.labels(host).set(0 if counts is None else 1)
        for state, n in (counts or {}).items():
            m.TASKS.labels(host, state.value).set(n)
        m.HEARTBEAT_INTERVAL.labels(host).set(hub.sessions.heartbeat_interval_ms() / 1000)
        m.HELD_BACK.labels(host).set(sum(p[2] for p in st.progress.values()))
        m.SHARDS_ALIVE.labels(host).set(sum(1 for s in st.shards.values() if s.alive))
        for shard, link in st.links.items():
            waits = link.full_waits
            if delta := waits - self._down_waits.get(shard, 0):
                m.RING_FULL_WAITS.labels(host, str(shard), "down").inc(delta)
            self._down_waits[shard] = waits

    async def readiness(self) -> Readiness:
        counts = await self._count_active()
        return Readiness(store_reachable=counts is not None,
                         shards_alive={i: s.alive for i, s in self.hub.state.shards.items()},
                         stopping=self.stopping)
