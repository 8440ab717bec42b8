"""Cluster upkeep: messages from other hub hosts, shard leases and their fencing.

Clustered only (cortexd/coord): every TTL/3 the lease loop renews this host's
shard leases for the shards whose ring heartbeat moves, and republishes the
directory; a shard that stops beating past its lease is *fenced*: its nodes are
detached and their active tasks moved to a fresh epoch no session holds, so
whatever the shard forwards when it resumes is refused by the store (and
recorded). The lease loop never waits for the store (fencing runs beside it), so a
PostgreSQL outage cannot make this host's leases lapse. The janitor and the queue
scan (janitor.py) run in a loop of their own.

Messages from other hosts arrive at least once: every branch of
:meth:`Cluster.on_message` is idempotent.
"""

import asyncio
import time
from typing import Any

from cortex.ids import is_task_id
from cortex.v1 import node_pb2
from cortexd.control.janitor import Janitor
from cortexd.control.sessions import NodeSessions
from cortexd.control.state import HubState, NodeState, cancel_frame
from cortexd.coord import Message, ShardReport
from cortexd.ipc import messages as m
from cortexd.lifecycle import ACTIVE, State
from cortexd.store.base import unpack_row

MAX_REMOTE_WATCHED = 10_000
REMOTE_WATCH_S = 30.0


class Cluster:
    def __init__(self, state: HubState, sessions: NodeSessions) -> None:
        self.state = state
        self.sessions = sessions
        self.janitor = Janitor(state, sessions)
        self._fenced: dict[int, list[tuple[str, int]]] = {}  # shard -> sessions to close
        self._fencing: dict[int, asyncio.Task[None]] = {}  # shard -> its fencing, running

    # -- messages from other hosts ---------------------------------------------------

    async def on_message(self, msg: Message) -> None:
        """A message from another hub host (at-least-once: every branch is idempotent)."""
        st = self.state
        kind = msg[0]
        if kind == "offer":
            task_id, hops = str(msg[1]), int(msg[2])
            if task_id in st.queue or not is_task_id(task_id):
                return
            row = await st.store.get_task(task_id)
            if row is not None and row.state is State.QUEUED and st.queue.room_for(
                    row, st.settings.max_queued_tasks, st.settings.max_queued_bytes) is None:
                st.queue[task_id] = row  # else it stays QUEUED in the store for another host
                st.hops[task_id] = hops
                st.kick()
        elif kind in ("cancel", "input"):
            await self._relay(kind, str(msg[1]), int(msg[2]), msg[3])
        elif kind == "close":
            node_id, epoch = str(msg[1]), int(msg[2])
            node = st.nodes.get(node_id)
            if node is not None and node.epoch == epoch and node.attached:
                st.log.info("node_moved", node=node_id, epoch=epoch)
                await st.to_shard(node.shard, m.pack(m.CLOSE, node_id, epoch,
                                                     "the node attached to another hub"))
        elif kind == "watch":
            task_id, host, seconds = str(msg[1]), str(msg[2]), float(msg[3])
            if task_id in st.remote_watch or len(st.remote_watch) < MAX_REMOTE_WATCHED:
                st.remote_watch.setdefault(task_id, {})[host] = time.monotonic() + seconds
        elif kind == "event":
            self._remote_event(str(msg[1]), msg[2:])

    async def _relay(self, kind: str, task_id: str, attempt: int, arg: Any) -> None:
        """A cancel or input for a task whose node is attached here."""
        st = self.state
        task = await st.store.get_task(task_id) if is_task_id(task_id) else None
        if task is None or task.attempt != attempt or task.state not in ACTIVE:
            return
        node = st.nodes.get(task.node_id)
        if node is None or not node.attached:
            return
        frame = (cancel_frame(task_id, attempt, str(arg)) if kind == "cancel"
                 else node_pb2.HubFrame(input=node_pb2.TaskInput(
                     task_id=task_id, attempt=attempt, data=bytes(arg))))
        await st.send_node(node, frame)

    def _remote_event(self, task_id: str, ev: list[Any]) -> None:
        """An event of a task on another host, for watchers here."""
        watchers = self.state.watchers
        if ev[0] == "state":
            watchers.publish(task_id, ("state", unpack_row(ev[1])))
        elif ev[0] == "output":
            watchers.publish(task_id, ("output", (int(ev[1]), int(ev[2]), bytes(ev[3]))))
        elif ev[0] == "prompt":
            watchers.publish(task_id, ("prompt", node_pb2.PromptEvent.FromString(ev[1])))

    async def watch_remote(self, task_id: str) -> None:
        """Ask every other host to send this host a task's events (a Watch here)."""
        coord = self.state.coord
        if coord.clustered:
            await coord.broadcast(["watch", task_id, coord.host_id, REMOTE_WATCH_S])

    async def send_remote_events(self) -> None:
        st = self.state
        while True:
            host, msg = await st.remote_events.get()
            try:
                await st.coord.send(host, msg)
            except Exception:  # one bad event must not end the forwarding
                st.log.exception("remote_event_failed", host=host, kind=msg[2])

    # -- leases ----------------------------------------------------------------------

    async def run(self) -> None:
        """Leases and directory upkeep every TTL/3; the janitor and the queue scan every
        ``queue_scan_s`` beside them."""
        scans = asyncio.get_running_loop().create_task(self.janitor.run())
        try:
            await self._lease_loop()
        finally:
            scans.cancel()

    async def _lease_loop(self) -> None:
        st = self.state
        period = st.settings.lease_ttl_ms / 3000
        beats: dict[int, tuple[int, float]] = {}
        lease_ok: dict[int, bool] = {}
        while True:
            try:
                now = time.monotonic()
                alive = set()
                for index, link in st.links.items():
                    beat = link.rx.producer_heartbeat
                    last = beats.get(index)
                    if last is None or last[0] != beat:
                        beats[index] = last = (beat, now)
                    ok = now - last[1] < st.settings.lease_ttl_ms / 1000
                    if ok:
                        alive.add(index)
                        if not lease_ok.get(index, True):
                            st.spawn(self._close_fenced(index))
                    elif lease_ok.get(index, True):
                        self._fencing[index] = asyncio.get_running_loop().create_task(
                            self.shard_lease_lost(index))
                    lease_ok[index] = ok
                if await st.coord.renew(alive, self._shard_reports()):
                    st.log.warning("coordination_flushed", republish=sum(
                        n.attached for n in st.nodes.values()))
                    for node in st.nodes.values():
                        node.published_running = -1
                self._publish_directory()
                self._prune_remote_watch(now)
                if st.queue:
                    st.kick()
            except Exception:
                st.log.exception("coordination_pass_failed")
            await asyncio.sleep(period)

    def _prune_remote_watch(self, now: float) -> None:
        """Forget watch interest nobody renewed (a Watch on another host ended)."""
        rw = self.state.remote_watch
        for task_id in [t for t, hosts in rw.items()
                        if all(until < now for until in hosts.values())]:
            del rw[task_id]

    def _shard_reports(self) -> list[ShardReport]:
        st = self.state
        counts: dict[int, int] = {}
        for n in st.nodes.values():
            if n.attached:
                counts[n.shard] = counts.get(n.shard, 0) + 1
        return [ShardReport(st.coord.host_id, i, info.pid, info.alive, info.restarts,
                            counts.get(i, 0), info.frames_in, info.frames_out)
                for i, info in sorted(st.shards.items())]

    def _publish_directory(self) -> None:
        st = self.state
        for node in st.nodes.values():
            if node.attached and node.published_running != len(node.running):
                node.published_running = len(node.running)
                st.coord.node_up(st.dir_entry(node), node.node_id)

    # -- fencing ---------------------------------------------------------------------

    async def shard_lease_lost(self, shard: int) -> None:
        """A shard stopped beating (paused, hung) past its lease: fence its sessions;
        each node re-attaches (here or at another host) and reconciliation rebinds
        its tasks."""
        st = self.state
        fenced = [n for n in st.nodes.values() if n.attached and n.shard == shard]
        st.log.warning("shard_lease_lost", shard=shard, nodes=len(fenced))
        for node in fenced:
            await self.fence(node, f"shard {shard} lost its lease")

    async def fence(self, node: NodeState, reason: str) -> None:
        st = self.state
        epoch = node.epoch
        await self.sessions.detach(node.node_id, epoch, reason)
        fence_epoch = await st.store.mint_epoch()
        for task in await st.store.tasks_in(ACTIVE, node.node_id):
            if task.node_epoch == epoch:
                await st.store.rebind_epoch(task.task_id, task.attempt, node.node_id,
                                            fence_epoch)
        # The session is closed when the shard beats again (or dies): until then what
        # it forwards is refused by the store, and recorded.
        self._fenced.setdefault(node.shard, []).append((node.node_id, epoch))

    async def _close_fenced(self, shard: int) -> None:
        st = self.state
        if (fencing := self._fencing.pop(shard, None)) is not None:
            await asyncio.gather(fencing, return_exceptions=True)  # every session fenced
        sessions = self._fenced.pop(shard, [])
        st.log.warning("shard_lease_regained", shard=shard, closing=len(sessions),
                       refused_frames=st.fenced_frames)
        for node_id, epoch in sessions:
            await st.to_shard(shard, m.pack(m.CLOSE, node_id, epoch,
                                            "its shard lost its lease"))

    async def shard_down(self, shard: int) -> None:
        self._fenced.pop(shard, None)  # its sessions died with it
        await self.sessions.shard_down(shard)
