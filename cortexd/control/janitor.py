"""Clustered upkeep of what other hosts left behind, every ``queue_scan_s``.

The janitor takes over nodes the store says are attached at a host that is gone;
the queue scan adopts tasks QUEUED in the store that no host seems to hold (a lost
offer, a dead host). Both act only on a fresh view: while Redis does not answer,
what it said before the outage is no evidence. Two hosts holding one task is
safe: one conditional write wins.
"""

import asyncio

from cortexd.control.sessions import NodeSessions
from cortexd.control.state import HubState, NodeState, now_ms
from cortexd.lifecycle import State

MAX_ADOPTED_PER_SCAN = 1000


class Janitor:
    def __init__(self, state: HubState, sessions: NodeSessions) -> None:
        self.state = state
        self.sessions = sessions
        self._suspects: dict[str, int] = {}  # node -> epoch seen orphaned once

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.state.settings.queue_scan_s)
            try:
                await self.sweep_nodes()
                await self.scan_queue()
            except Exception:
                self.state.log.exception("coordination_scan_failed")

    async def sweep_nodes(self) -> None:
        """Seen orphaned on two passes in a row (a flushed directory is republished
        well within one), such a node is marked detached and gets the grace period
        here; if it re-attaches anywhere, that host's epoch wins."""
        st = self.state
        if not st.coord.healthy:
            self._suspects.clear()  # what Redis said before the outage is no evidence
            return
        directory = await st.coord.directory(max_age_s=0)
        live = await st.coord.live_hosts()
        if not st.coord.healthy:
            return
        me = st.coord.host_id
        for row in await st.store.list_nodes():
            local = st.nodes.get(row.node_id)
            if not row.attached or (local is not None and local.attached):
                self._suspects.pop(row.node_id, None)
                continue
            entry = directory.get(row.node_id)
            if entry is not None and entry.host != me and entry.host in live \
                    and entry.epoch >= row.session_epoch:
                self._suspects.pop(row.node_id, None)
                continue
            if self._suspects.get(row.node_id) != row.session_epoch:
                self._suspects[row.node_id] = row.session_epoch
                continue
            del self._suspects[row.node_id]
            if not await st.store.node_detached(row.node_id, row.session_epoch, now_ms()):
                continue
            st.log.warning("node_orphaned", node=row.node_id, epoch=row.session_epoch,
                           host=entry.host if entry else None)
            if local is None or local.epoch <= row.session_epoch:
                st.nodes[row.node_id] = NodeState(
                    row.node_id, row.session_epoch, row.shard, row.labels, row.capacity,
                    row.agent_version, attached=False, last_seen_ms=now_ms())
            self.sessions.start_grace(row.node_id, row.session_epoch)

    async def scan_queue(self) -> None:
        st = self.state
        cutoff = now_ms() - int(st.settings.queue_scan_s * 1000)
        adopted = 0
        for row in await st.store.list_tasks(State.QUEUED, "", MAX_ADOPTED_PER_SCAN):
            if row.task_id not in st.queue and row.updated_ms < cutoff \
                    and st.queue.room_for(row, st.settings.max_queued_tasks,
                                          st.settings.max_queued_bytes) is None:
                st.queue[row.task_id] = row
                st.hops.pop(row.task_id, None)
                adopted += 1
        if adopted:
            st.log.info("queue_adopted", tasks=adopted)
            st.kick()
