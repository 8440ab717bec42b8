"""Operating this hub host (issue 13): shard drain, restart, scale, rebalance; the
hub-side drain of a node. The gRPC adapter is operateapi.py.

The supervisor owns the shard processes (cortexd/shardset.py): a shard operation is
a ``shard_op`` map on its pipe (:class:`SupervisorLink`) and its ``op_done``
answer. Meanwhile, and after, this module watches what the operator cares about —
the nodes leaving a shard and attaching again elsewhere, the tasks still running —
and reports it as :class:`Progress` every ``TICK_S`` while it changes, then a
summary (``done``).

Invariants:

- One operation at a time on a host (``Operations.lock``); a second waits.
- Nothing here ends a task: nodes keep their tasks and spool across a move (the
  same reconnect as a shard's loss). Only a node drain's ``deadline_s`` cancels what
  is still running at it, through the ordinary cancel.
- A node an operator drained stays draining when it attaches again
  (``HubState.held_nodes``) until undrained.
"""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from cortexd.childproc import RingPaths, report
from cortexd.control.errors import RequestError
from cortexd.control.hub import Hub
from cortexd.control.state import NodeState, ShardInfo
from cortexd.ipc import messages as m
from cortexd.ipc.link import RingLink
from cortexd.ipc.ring import Ring

TICK_S = 0.5
#: How long the nodes of a drained or restarted shard get to attach again elsewhere.
MOVE_TIMEOUT_S = 60.0
SUPERVISOR_TIMEOUT_S = 180.0
DEFAULT_REBALANCE_ROUNDS = 6


@dataclass(slots=True)
class Progress:
    operation: str
    phase: str
    message: str = ""
    done: bool = False
    ok: bool = True
    elapsed_s: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)


class SupervisorLink:
    """The control process's requests to its supervisor, answered by ``op_done``."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._next = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}

    async def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        self._next += 1
        op_id = self._next
        future = self._waiting[op_id] = asyncio.get_running_loop().create_future()
        try:
            report(self.conn, "shard_op", op_id=op_id, op=op, **fields)
            return await asyncio.wait_for(future, SUPERVISOR_TIMEOUT_S)
        finally:
            self._waiting.pop(op_id, None)

    def answered(self, msg: dict[str, Any]) -> None:
        future = self._waiting.get(int(msg.get("op_id", 0)))
        if future is not None and not future.done():
            future.set_result(msg)


class Operations:
    def __init__(self, hub: Hub, supervisor: SupervisorLink) -> None:
        self.hub = hub
        self.state = hub.state
        self.supervisor = supervisor
        self.lock = asyncio.Lock()
        self.readers: dict[int, asyncio.Task[None]] = {}  # shards added live: their inbox

    # -- what the supervisor tells ---------------------------------------------------

    def from_supervisor(self, msg: dict[str, Any]) -> None:
        event = msg.get("event")
        if event == "op_done":
            self.hub.shards.drained = {int(i) for i in msg.get("drained", [])}
            self.supervisor.answered(msg)
        elif event == "shard_added":
            self._attach_shard(int(msg["shard"]), [Path(p) for p in msg["paths"]])
        elif event == "shard_removed":
            self.state.spawn(self._release_shard(int(msg["shard"])))

    def _attach_shard(self, index: int, paths: list[Path]) -> None:
        rp = RingPaths(*paths)
        link = RingLink(Ring(rp.down), Ring(rp.up), rp.up_wake, rp.down_wake)
        link.start(asyncio.get_running_loop())
        self.state.links[index] = link
        self.state.shards[index] = ShardInfo()
        self.readers[index] = asyncio.get_running_loop().create_task(
            self.hub.inbox.serve(index, link))
        report(self.supervisor.conn, "shard_attached", shard=index)

    async def _release_shard(self, index: int) -> None:
        """The supervisor stopped shard ``index`` for good: read what it left on its ring
        (its nodes' detaches), then let the ring go."""
        st = self.state
        link = st.links.get(index)
        deadline = time.monotonic() + 10.0
        while link is not None and link.rx.used_bytes and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the inbox reads on; no event says "empty"
        await self.hub.cluster.shard_down(index)
        reader = self.readers.pop(index, None)
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if (link := st.links.pop(index, None)) is not None:
            link.close()
        st.shards.pop(index, None)
        self.hub.shards.drained.discard(index)
        report(self.supervisor.conn, "shard_released", shard=index)

    def close(self) -> None:
        for reader in self.readers.values():
            reader.cancel()

    # -- figures ---------------------------------------------------------------------

    def per_shard(self) -> dict[int, list[NodeState]]:
        out: dict[int, list[NodeState]] = {i: [] for i in self.state.shards}
        for node in self.state.nodes.values():
            if node.attached:
                out.setdefault(node.shard, []).append(node)
        return out

    def counts(self, **extra: int) -> dict[str, int]:
        per = self.per_shard()
        counts = {f"shard {i}": len(nodes) for i, nodes in sorted(per.items())}
        counts["nodes attached"] = sum(len(n) for n in per.values())
        counts["tasks running"] = sum(len(n.running) for n in self.state.nodes.values())
        counts.update(extra)
        return counts

    # -- shard operations ------------------------------------------------------------

    async def drain_shard(self, shard: int) -> AsyncIterator[Progress]:
        async for p in self._shard_op(f"drain shard {shard}", "drain", shard=shard):
            yield p

    async def restart_shard(self, shard: int) -> AsyncIterator[Progress]:
        async for p in self._shard_op(f"restart shard {shard}", "restart", shard=shard):
            yield p

    async def scale(self, count: int) -> AsyncIterator[Progress]:
        op = f"scale {len(self.state.links)} -> {count}"
        async for p in self._shard_op(op, "scale", count=count):
            yield p

    async def _shard_op(self, operation: str, op: str, **fields: Any) -> AsyncIterator[Progress]:
        async with self.lock:
            t0 = time.monotonic()
            moving = {n.node_id: n.epoch for n in self.state.nodes.values() if n.attached
                      and (n.shard >= fields["count"] if op == "scale"
                           else n.shard == fields.get("shard"))}
            yield Progress(operation, "asking", f"{len(moving)} nodes may move",
                           counts=self.counts())
            asked = asyncio.ensure_future(self.supervisor.ask(op, **fields))
            while not asked.done():
                await asyncio.wait({asked}, timeout=TICK_S)
                yield Progress(operation, "moving", elapsed_s=time.monotonic() - t0,
                               counts=self.counts(moved=self._moved(moving)))
            answer = asked.result()
            if not answer.get("ok"):
                yield Progress(operation, "done", str(answer.get("message")), done=True,
                               ok=False, elapsed_s=time.monotonic() - t0, counts=self.counts())
                return
            # Wait for the nodes that were on the shard(s) to attach again.
            deadline = time.monotonic() + MOVE_TIMEOUT_S
            while self._away(moving) and time.monotonic() < deadline:
                await asyncio.sleep(TICK_S)  # attaches are watched by polling the view
                yield Progress(operation, "waiting", f"{len(self._away(moving))} nodes "
                               "not attached again yet", elapsed_s=time.monotonic() - t0,
                               counts=self.counts(moved=self._moved(moving)))
            away = self._away(moving)
            yield Progress(operation, "done", f"{answer.get('message')}; "
                           f"{self._moved(moving)} nodes attached again"
                           + (f", {len(away)} not back: {', '.join(sorted(away)[:10])}"
                              if away else ""),
                           done=True, ok=not away, elapsed_s=time.monotonic() - t0,
                           counts=self.counts(moved=self._moved(moving), missing=len(away)))

    def _moved(self, before: dict[str, int]) -> int:
        nodes = self.state.nodes
        return sum(1 for i, e in before.items()
                   if (n := nodes.get(i)) is not None and n.attached and n.epoch != e)

    def _away(self, before: dict[str, int]) -> list[str]:
        """The nodes of ``before`` not attached again yet: detached, on their old session,
        or on a shard that takes none."""
        nodes, drained = self.state.nodes, self.hub.shards.drained
        return [i for i, epoch in before.items() if (n := nodes.get(i)) is None
                or not n.attached or n.epoch == epoch
                or n.shard in drained or n.shard not in self.state.links]

    async def rebalance(self, max_rounds: int = 0) -> AsyncIterator[Progress]:
        """Even out attached nodes over the shards that accept: close the sessions of the
        surplus (idle nodes first); the kernel gives their new connections to a shard at
        random, so repeat a few rounds until no two shards differ by more than one."""
        operation = "rebalance"
        async with self.lock:
            t0 = time.monotonic()
            rounds = max_rounds or DEFAULT_REBALANCE_ROUNDS
            closed = 0
            for round_no in range(1, rounds + 1):
                accepting = {i: nodes for i, nodes in self.per_shard().items()
                             if i not in self.hub.shards.drained and i in self.state.links}
                surplus = surplus_nodes(accepting)
                if not surplus:
                    break
                moving = {n.node_id: n.epoch for n in surplus}
                # Shards at or above their share take no attach meanwhile, so the moved
                # nodes land on the others (a refused node retries in 100 ms).
                share = -(-sum(len(v) for v in accepting.values()) // len(accepting))
                paused = {i for i, v in accepting.items()
                          if len(v) - sum(1 for n in surplus if n.shard == i) >= share - 1
                          and len(v) >= share}
                for i in paused:
                    await self.state.to_shard(i, m.pack(m.ADMIT, False))
                for node in surplus:
                    await self.state.to_shard(node.shard, m.pack(
                        m.CLOSE, node.node_id, node.epoch, "rebalance: attach again"))
                closed += len(surplus)
                deadline = time.monotonic() + MOVE_TIMEOUT_S
                try:
                    while self._moved(moving) < len(moving) and time.monotonic() < deadline:
                        await asyncio.sleep(TICK_S)
                        yield Progress(operation, "moving", f"round {round_no}: "
                                       f"{len(moving)} sessions closed",
                                       elapsed_s=time.monotonic() - t0,
                                       counts=self.counts(moved=self._moved(moving)))
                finally:
                    for i in paused:
                        await self.state.to_shard(i, m.pack(m.ADMIT, True))
            accepting = {i: nodes for i, nodes in self.per_shard().items()
                         if i not in self.hub.shards.drained}
            sizes = [len(n) for n in accepting.values()] or [0]
            even = max(sizes) - min(sizes) <= 1
            yield Progress(operation, "done", f"{closed} sessions moved; nodes per shard "
                           f"{min(sizes)}-{max(sizes)}" + ("" if even else " (still uneven)"),
                           done=True, ok=even, elapsed_s=time.monotonic() - t0,
                           counts=self.counts(closed=closed))

    # -- node operations -------------------------------------------------------------

    def _node(self, node_id: str) -> NodeState:
        node = self.state.nodes.get(node_id)
        if node is None:
            raise RequestError("NOT_FOUND", f"node {node_id} is not known to this hub host")
        return node

    async def drain_node(self, node_id: str, deadline_s: float) -> AsyncIterator[Progress]:
        """No new task on the node; its running ones finish; at ``deadline_s`` (if given)
        the rest are cancelled."""
        st, operation = self.state, f"drain node {node_id}"
        node = self._node(node_id)
        st.held_nodes.add(node_id)
        node.draining = True
        t0 = time.monotonic()
        cancelled = 0
        yield Progress(operation, "waiting", f"{len(node.running)} tasks running",
                       counts={"running": len(node.running)})
        last = -1
        while (node := self._node(node_id)).running:
            now = time.monotonic()
            if deadline_s and now - t0 >= deadline_s and not cancelled:
                for task_id in sorted(node.running):
                    with contextlib.suppress(RequestError):
                        await self.hub.tasks.cancel(task_id, f"node {node_id} drained: "
                                                    f"deadline of {deadline_s:g} s passed")
                        cancelled += 1
                yield Progress(operation, "cancelling", f"{cancelled} tasks cancelled at "
                               "the deadline", elapsed_s=now - t0,
                               counts={"running": len(node.running), "cancelled": cancelled})
            if len(node.running) != last:
                last = len(node.running)
                yield Progress(operation, "waiting", f"{last} tasks running",
                               elapsed_s=now - t0,
                               counts={"running": last, "cancelled": cancelled})
            await asyncio.sleep(TICK_S)  # task ends are watched by polling the view
        yield Progress(operation, "done", f"node {node_id} drained: no task running"
                       + (f" ({cancelled} cancelled at the deadline)" if cancelled else ""),
                       done=True, elapsed_s=time.monotonic() - t0,
                       counts={"running": 0, "cancelled": cancelled})

    def undrain_node(self, node_id: str) -> Progress:
        node = self._node(node_id)
        was = node_id in self.state.held_nodes or node.draining
        self.state.held_nodes.discard(node_id)
        node.draining = False
        self.state.node_changed(node)
        self.state.kick()
        return Progress(f"undrain node {node_id}", "done",
                        f"node {node_id} takes tasks again" if was
                        else f"node {node_id} was not draining", done=True)


def surplus_nodes(per_shard: dict[int, list[NodeState]]) -> list[NodeState]:
    """The fewest nodes whose move makes the shards' counts differ by at most one
    (pure; idle nodes, then the least busy, leave first)."""
    sizes = {i: len(nodes) for i, nodes in per_shard.items()}
    if len(sizes) < 2:
        return []
    take: dict[int, int] = dict.fromkeys(sizes, 0)
    while max(sizes.values()) - min(sizes.values()) > 1:
        hi = max(sizes, key=lambda i: sizes[i])
        lo = min(sizes, key=lambda i: sizes[i])
        sizes[hi] -= 1
        sizes[lo] += 1
        take[hi] += 1
    out: list[NodeState] = []
    for i, n in take.items():
        out += sorted(per_shard[i], key=lambda node: (len(node.running), node.node_id))[:n]
    return out
