"""Node sessions: attach (with reconciliation), detach, and the grace after it.

A node's session is its stream through one shard, named by a fresh epoch minted at
attach. Attach supersedes any older session of the node (its shard is told to
close it), stores the node as attached, reconciles the tasks the node reports
against the store (reconcile.py, pure) and welcomes the node with the verdicts.
A node that goes (detach, or its shard exits) keeps its tasks for
``node_grace_s``; past it they are LOST — unless, clustered, the node lives on at
another host (then that host owns them) or Redis cannot say (then ask again).

The heartbeat interval a node is asked for grows with the fleet (DESIGN §3).
"""

import asyncio
import time

from cortex.envelope import key_id, welcome_proof
from cortex.ids import is_task_id
from cortex.tools import node_labels
from cortex.v1 import node_pb2
from cortexd.control.placement import Placement
from cortexd.control.reconcile import reconcile
from cortexd.control.state import HubState, NodeState, cancel_frame, now_ms
from cortexd.ipc import messages as m
from cortexd.lifecycle import ACTIVE, State
from cortexd.store import NodeRow, TaskRow


class NodeSessions:
    def __init__(self, state: HubState, placement: Placement) -> None:
        self.state = state
        self.placement = placement
        self._grace: dict[str, asyncio.TimerHandle] = {}
        self._told_interval = state.settings.heartbeat_interval_ms
        self._interval = state.settings.heartbeat_interval_ms
        self._interval_at = 0.0

    async def recover(self) -> None:
        """Rebuild the in-memory view from the store after a (re)start."""
        st = self.state
        for row in await st.store.list_nodes():
            st.nodes[row.node_id] = NodeState(row.node_id, row.session_epoch, row.shard,
                                              row.labels, row.capacity, row.agent_version,
                                              attached=False, last_seen_ms=row.last_seen_ms)
        for task in await st.store.tasks_in(frozenset({State.QUEUED})):
            st.queue[task.task_id] = task
        active = await st.store.tasks_in(ACTIVE)
        for task in active:
            if (node := st.nodes.get(task.node_id)) is not None:
                node.running.add(task.task_id)
        for node in st.nodes.values():
            if node.running:
                self.start_grace(node.node_id, node.epoch)
        st.log.info("control_recovered", nodes=len(st.nodes), queued=len(st.queue),
                    active=len(active))

    # -- attach -------------------------------------------------------------------

    async def attach(self, shard: int, conn_id: int, node_id: str, hello_raw: bytes) -> None:
        st = self.state
        hello = node_pb2.Hello.FromString(hello_raw)
        epoch = await st.store.mint_epoch()
        old = st.nodes.get(node_id)
        if old is not None and old.attached:
            await st.to_shard(old.shard, m.pack(m.CLOSE, node_id, old.epoch,
                                                "superseded by a newer session"))
        labels = node_labels(hello.labels, ((t.name, t.version) for t in hello.tools))
        for bad in hello.tool_problems:
            st.log.warning("node_tool_skipped", node=node_id, tool=bad.name, error=bad.error)
        # Not attached (placeable) until its Welcome is on the shard's ring: a task placed
        # before it would be sent ahead of the Welcome, to a session the shard does not
        # have yet, and dropped (stuck ASSIGNED); and the kept tasks are not counted yet.
        node = NodeState(node_id, epoch, shard, labels, hello.capacity,
                         hello.agent_version, attached=False, last_seen_ms=now_ms(),
                         isolation=hello.isolation, draining=node_id in st.held_nodes)
        st.nodes[node_id] = node
        self.cancel_grace(node_id)
        await st.store.node_attached(NodeRow(node_id, epoch, node.labels, node.capacity,
                                             node.agent_version, shard, True,
                                             node.last_seen_ms))
        st.coord.node_up(st.dir_entry(node), node_id)
        reported = [(rep.task_id, rep.attempt) for rep in hello.tasks]
        stored: dict[str, TaskRow | None] = {}
        for task_id, _ in reported:
            if task_id not in stored:
                stored[task_id] = (await st.store.get_task(task_id) if is_task_id(task_id)
                                   else None)
        plan = reconcile(node_id, reported, stored, await st.store.tasks_in(ACTIVE, node_id))
        for task in plan.keep:
            await st.store.rebind_epoch(task.task_id, task.attempt, node_id, epoch)
            node.running.add(task.task_id)
        for task in plan.resend:
            await st.store.rebind_epoch(task.task_id, task.attempt, node_id, epoch)
            task.node_epoch = epoch
            node.running.add(task.task_id)
        for task in plan.lost:
            await st.finish(task, State.LOST, reason="node came back without the task")
        if old is not None:
            await self._settle(old.running - node.running)
        welcome = node_pb2.Welcome(session_epoch=epoch, hub_id=st.hub_id, shard=shard,
                                   heartbeat_interval_ms=self.heartbeat_interval_ms(),
                                   fold_frames=True)
        if hello.hub_challenge and st.welcome_key is not None:  # the node checks our key
            welcome.hub_proof = welcome_proof(st.welcome_key, node_id, hello.hub_challenge)
            welcome.hub_key_id = key_id(st.welcome_key.public_key())
        for v in plan.verdicts:
            welcome.verdicts.add(task_id=v.task_id, attempt=v.attempt, verdict=v.verdict,
                                 resume_offset=v.resume_offset)
        await st.to_shard(shard, m.pack(m.WELCOME, conn_id, node_id, epoch,
                                        node_pb2.HubFrame(welcome=welcome).SerializeToString(),
                                        welcome.heartbeat_interval_ms))
        node.attached = True
        self.placement.changed(node)
        st.log.info("node_admitted", node=node_id, epoch=epoch, shard=shard,
                    kept=len(plan.keep), resent=len(plan.resend))
        if plan.resend:
            await self.placement.dispatch([(t, node) for t in plan.resend])
        for task in plan.cancels:
            await st.send_node(node, cancel_frame(task.task_id, task.attempt,
                                                  "cancel requested"))
        st.kick()

    # -- heartbeat interval ---------------------------------------------------------

    def heartbeat_interval_ms(self) -> int:
        """The interval a node is asked for: it grows with the fleet (DESIGN §3).

        Each heartbeat costs the hub one gRPC message in and one out (~250 µs of CPU
        measured here, `bench/scenarios.py hold`), so the fleet as a whole is held
        to ``max_heartbeats_per_s``; the configured interval is the floor.
        """
        now = time.monotonic()
        if now - self._interval_at >= 1.0:  # counted at most once a second (storms)
            attached = sum(1 for n in self.state.nodes.values() if n.attached)
            by_budget = attached * 1000 // self.state.settings.max_heartbeats_per_s
            self._interval = int(max(self.state.settings.heartbeat_interval_ms, by_budget))
            self._interval_at = now
        return self._interval

    async def _tell_interval(self) -> None:
        """When the interval has moved by 10 % since the shards were last told, tell
        them; their heartbeat acks carry it to every node."""
        interval = self.heartbeat_interval_ms()
        if abs(interval - self._told_interval) * 10 >= self._told_interval:
            self._told_interval = interval
            record = m.pack(m.INTERVAL, interval)
            for shard in list(self.state.links):
                await self.state.to_shard(shard, record)

    async def run_housekeeping(self) -> None:
        """Once a second: tell the shards when the heartbeat interval has moved."""
        while True:
            await asyncio.sleep(1.0)
            try:
                await self._tell_interval()
            except Exception:
                self.state.log.exception("housekeeping_failed")

    # -- detach and grace -------------------------------------------------------------

    async def detach(self, node_id: str, epoch: int, reason: str) -> None:
        st = self.state
        node = st.nodes.get(node_id)
        if node is None or node.epoch != epoch or not node.attached:
            return
        node.attached = False
        node.last_seen_ms = now_ms()
        self.placement.changed(node)
        st.log_reads.node_gone(node_id)
        st.node_calls.node_gone(node_id)
        st.coord.node_down(node_id, epoch)
        await st.store.node_detached(node_id, epoch, node.last_seen_ms)
        st.log.info("node_gone", node=node_id, epoch=epoch, reason=reason,
                    running=len(node.running))
        if node.running:
            self.start_grace(node_id, epoch)

    async def shard_down(self, shard: int) -> None:
        for node in list(self.state.nodes.values()):
            if node.attached and node.shard == shard:
                await self.detach(node.node_id, node.epoch, f"shard {shard} exited")

    def start_grace(self, node_id: str, epoch: int) -> None:
        self.cancel_grace(node_id)
        loop = asyncio.get_running_loop()
        self._grace[node_id] = loop.call_later(
            self.state.settings.node_grace_s,
            lambda: self.state.spawn(self._grace_expired(node_id, epoch)))

    def cancel_grace(self, node_id: str) -> None:
        if (handle := self._grace.pop(node_id, None)) is not None:
            handle.cancel()

    async def _grace_expired(self, node_id: str, epoch: int) -> None:
        st = self.state
        self._grace.pop(node_id, None)
        node = st.nodes.get(node_id)
        if node is None or node.attached or node.epoch != epoch:
            return
        if st.coord.clustered:
            if not st.coord.healthy:
                # Redis cannot say whether the node lives on at another host: never
                # guess "gone" (that would mark a live node's tasks LOST); ask again later.
                self.start_grace(node_id, epoch)
                return
            if not await self._still_gone(node_id, epoch):
                return
        active = await st.store.tasks_in(ACTIVE, node_id)
        for task in active:
            await st.finish(task, State.LOST,
                            reason=f"node missed its grace of {st.settings.node_grace_s} s")
        await self._settle(node.running - {task.task_id for task in active})
        node.running.clear()

    async def _settle(self, task_ids: set[str]) -> None:
        """Tasks this hub held active on a node that the store holds ended: their end was
        written where the news of it could be lost (a shard that died between its commit
        and its WROTE record, cortexd/shards/writes.py). Tell their watchers now (a
        second end event is harmless: a watch ends at the first)."""
        for task_id in task_ids:
            row = await self.state.store.get_task(task_id)
            if row is not None and row.state.terminal:
                self.state.ended(row)

    async def _still_gone(self, node_id: str, epoch: int) -> bool:
        """Clustered: is session ``epoch`` still the node's newest, and not attached at a
        live host? (It may have re-attached anywhere: then that host owns its tasks.)"""
        st = self.state
        rows = [r for r in await st.store.list_nodes() if r.node_id == node_id]
        if rows and rows[0].session_epoch != epoch:
            return False
        entry = await st.coord.lookup(node_id)
        return not (entry is not None and entry.epoch >= epoch
                    and entry.host in await st.coord.live_hosts()
                    and entry.host != st.coord.host_id)
