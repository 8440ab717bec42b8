"""Placement: queued tasks onto this host's nodes, then their signed envelopes out.

One pass (woken by :meth:`HubState.kick`) places up to ``MAX_PLACEMENTS_PER_PASS``
tasks with the pure :class:`cortexd.scheduler.Placer`; tasks no local node can
take are offered to other hosts (offers.py). A placement is durable before its
envelope is sent: QUEUED -> ASSIGNED is a conditional write, all of a pass's
writes in flight together so they share one group commit. Dispatch is
at-least-once (an ASSIGNED task is sent again when its node re-attaches).

The Placer (a heap over the attached nodes, cortexd/scheduler.py) is kept for the
process's life and told what changes — a task placed, a slot freed
(:meth:`HubState.ended` and the other places a task leaves a node, through
``HubState.node_changed``), a node attached or undrained — each O(log n), instead of
rebuilt: a build is O(nodes), and at 10,000 nodes one every 100 ms was the part of a
task's cost that grew with the fleet (issue 9). A pick is checked against the node's
current state (the same session object, attached, not draining; the Placer checks
room and key); a node that fails it leaves the Placer and the task is asked again. A
new node id in ``st.nodes`` the Placer was not told of forces a rebuild, and so does a
pass that finds no node, at most every ``MISS_REBUILD_S``: a change nobody told the
Placer of (a test's, or a path that forgot) is found by the first pass after that, and
with a full fleet the cost is O(nodes) per ``MISS_REBUILD_S`` at most, never per task.

A new task that finds a free node while nothing is queued before it (:meth:`admit`)
is inserted already placed (issue 9): the insert and QUEUED -> ASSIGNED, the same
fenced conditional write, share one commit, and no scheduling pass runs for it. Its
node is picked from the kept Placer only (a miss is not worth an O(nodes) rebuild per
submission: the task is queued, and the pass that follows may rebuild). The envelopes of
tasks placed so go out together, one signing batch per loop turn.
"""

import asyncio
import time

from cortex.v1 import artifacts_pb2, node_pb2
from cortexd.control.offers import Offers
from cortexd.control.state import FrameTooLarge, HubState, NodeState, now_ms
from cortexd.lifecycle import State
from cortexd.scheduler import Placer
from cortexd.serializers.envelope import EnvelopeRequest, frame_bound
from cortexd.store import StaleWrite, TaskRow

MAX_PLACEMENTS_PER_PASS = 512
#: A pass that finds no node rebuilds the Placer, at most this often: a backstop for a
#: change nobody told it of (found by the first pass after it).
MISS_REBUILD_S = 1.0


def spec_of(task: TaskRow) -> bytes:
    return node_pb2.TaskSpec(command=task.command, env=task.env, cwd=task.cwd,
                             timeout_s=task.timeout_s, idle_timeout_s=task.idle_timeout_s,
                             memory_max_bytes=task.memory_max_bytes,
                             pids_max=task.pids_max, outputs=task.outputs, inputs=[
                                 artifacts_pb2.ArtifactInput(digest=artifacts_pb2.Digest(
                                     sha256=sha, size_bytes=size), path=path)
                                 for sha, size, path in task.inputs],
                             tool=task.tool, workspace=task.workspace).SerializeToString()


#: Below this many bytes of command, env and paths (with room for protobuf's own
#: bytes) a task's envelope is certainly under the frame limit: no exact bound needed.
_CERTAINLY_FITS = 64 << 10


def undeliverable(task: TaskRow, max_frame_bytes: int) -> str | None:
    """Why ``task`` could never be sent to a node (its signed envelope would be over
    the node stream's frame limit), or None. Whatever the hub accepts it must be able
    to deliver, so this is checked at submission."""
    rough = (len(task.command) * 4 + len(task.cwd) * 4 + len(task.workspace) * 4
             + sum(4 * (len(k) + len(v)) + 16 for k, v in task.env.items())
             + sum(4 * len(p) + 16 for p in task.outputs)
             + sum(4 * len(p) + 128 for _, _, p in task.inputs) + 4096)
    if rough + _CERTAINLY_FITS <= max_frame_bytes:
        return None
    bound = frame_bound(spec_of(task), task.tenant)
    if bound <= max_frame_bytes:
        return None
    return (f"the task's signed envelope would be up to {bound} bytes, over the node "
            f"stream's frame limit of {max_frame_bytes} bytes (max_frame_bytes); shorten "
            "its command, env or file lists")


def _running(node: NodeState) -> int:
    return len(node.running)


class Placement:
    def __init__(self, state: HubState, offers: Offers) -> None:
        self.state = state
        self.offers = offers
        self._picks = 0
        self._placer: Placer[NodeState] | None = None
        self._seen = 0  # len(st.nodes) the Placer knows of: more is a node it was not told of
        self._missed_at = -MISS_REBUILD_S  # the last rebuild after a pass found no node
        self.builds = 0  # Placers built (O(nodes) each)
        self._outbox: list[tuple[TaskRow, NodeState]] = []  # placed at insert, to send
        state.node_changed = self.changed

    async def run(self) -> None:
        while True:
            await self.state.kicked()
            try:
                await self.place()
            except Exception:
                self.state.log.exception("schedule_pass_failed")

    async def place(self) -> None:
        """One scheduling pass."""
        st = self.state
        if not st.queue:  # most kicks (a task ended) find nothing queued
            return
        if not self._kept_placer() and not (self._rebuild_after_miss() and self._placer):
            if st.coord.clustered:  # no local node at all
                self.offers.offer_soon(list(st.queue.values()))
            return
        placed: list[tuple[TaskRow, NodeState]] = []
        unplaced: list[TaskRow] = []
        for task in list(st.queue.values()):
            if len(placed) >= MAX_PLACEMENTS_PER_PASS:
                st.kick()  # more next pass
                break
            node = self._pick(task)
            if node is None:
                unplaced.append(task)
                continue
            self._picks += 1
            node.last_picked = self._picks
            node.running.add(task.task_id)
            self._kept_placer().placed(node)
            del st.queue[task.task_id]
            st.hops.pop(task.task_id, None)
            placed.append((task, node))
        if unplaced and st.coord.clustered:
            self.offers.offer_soon(unplaced)
        rows = await asyncio.gather(*(self._assign(task, node) for task, node in placed))
        await self.dispatch([(row, node) for row, (_, node) in zip(rows, placed, strict=True)
                             if row is not None])

    async def admit(self, task: TaskRow) -> tuple[TaskRow, bool]:
        """Store a new task (or find the one its idempotency key names): (row, created).
        Placed at once when nothing is queued and the kept Placer has a node for it,
        else queued for the scheduler. Its events are published either way."""
        node = self.reserve(task)
        try:
            row, created = await self.state.store.create_task(
                task, None if node is None else (node.node_id, node.epoch))
        except BaseException:
            self.release(task.task_id, node)
            raise
        if not created:  # its idempotency key names another task: nothing to take in
            self.release(task.task_id, node)
            return row, False
        return self.admitted(row, node), True

    def admitted(self, row: TaskRow, node: NodeState | None, sent: bool = False) -> TaskRow:
        """A new task's insert committed: placed on the session of ``node`` (its slot
        reserved for it by :meth:`reserve`), or queued; ``node`` None: nothing was
        reserved here (a shard's task settled from the store). Take it into the hub's
        view, publish it, send it (``sent``: its shard did) or wake the scheduler; a
        reserved slot it did not take is released. Idempotent: a task the view already
        holds is left as it is."""
        st = self.state
        held = st.nodes.get(row.node_id) if row.state is State.ASSIGNED else None
        # Placed on the session it was fenced on (else the node's re-attach resends it).
        placed = (held is not None and held.epoch == row.node_epoch
                  and (node is None or node is held))
        if node is not None and not placed:
            self.release(row.task_id, node)
        if row.state is State.ASSIGNED and not placed:
            return row
        if held is not None:
            if node is None:  # its slot was not reserved here: take it, once
                if row.task_id in held.running:
                    return row
                held.running.add(row.task_id)
                self.changed(held)
            st.publish(row.task_id, ("state", row))
            if held.attached and not sent:
                self._outbox.append((row, held))
                if len(self._outbox) == 1:
                    st.spawn(self._send_outbox())
            return row
        if row.state is State.QUEUED and row.task_id not in st.queue:
            st.queue[row.task_id] = row
            st.publish(row.task_id, ("state", row))
            st.kick()
        return row

    def reserve(self, task: TaskRow) -> NodeState | None:
        """A node for a new task to be inserted placed on (its slot taken until
        :meth:`release` or :meth:`admitted`), or None: insert it queued."""
        return self._reserve(task)

    def release(self, task_id: str, node: NodeState | None) -> None:
        """A slot reserved (or placed) for ``task_id`` is not taken after all."""
        if node is not None:
            node.running.discard(task_id)
            self.changed(node)

    def _reserve(self, task: TaskRow) -> NodeState | None:
        st = self.state
        if st.queue:  # older tasks wait: they go first, through the pass
            return None
        placer = self._kept_placer()
        node = self._pick_from(placer, task)
        if node is None or not self._usable(node):
            return None
        self._picks += 1
        node.last_picked = self._picks
        node.running.add(task.task_id)
        placer.placed(node)
        return node

    async def _send_outbox(self) -> None:
        await asyncio.sleep(0)  # the other inserts of the same commit join the batch
        batch, self._outbox = self._outbox, []
        try:
            await self.dispatch(batch)
        except Exception:
            self.state.log.exception("dispatch_failed", tasks=len(batch))

    def changed(self, node: NodeState) -> None:
        """``node``'s load fell, or it became placeable (attached, undrained) or not:
        the kept Placer takes its current key (O(log n))."""
        placer = self._placer
        if placer is None:
            return
        known = len(placer)
        placer.changed(node)
        if len(placer) > known and len(self.state.nodes) == self._seen + 1:
            self._seen += 1  # a new node id, told of: no rebuild for it

    def _kept_placer(self) -> Placer[NodeState]:
        """The kept Placer; built anew only when there is none yet or ``st.nodes`` holds
        a node id it was not told of."""
        st = self.state
        if self._placer is None or len(st.nodes) != self._seen:
            return self._build()
        return self._placer

    def _build(self) -> Placer[NodeState]:
        st = self.state
        self._placer = Placer(st.nodes.values(), _running)  # the nodes themselves: no copies
        self._seen = len(st.nodes)
        self.builds += 1
        return self._placer

    def _rebuild_after_miss(self) -> bool:
        """A pass found no node: rebuild the Placer (at most every ``MISS_REBUILD_S``) in
        case a change was not told; True when it did."""
        now = time.monotonic()
        if now - self._missed_at < MISS_REBUILD_S:
            return False
        self._missed_at = now
        self._build()
        return True

    def _usable(self, node: NodeState) -> bool:
        """The pick is still the node's current, placeable session; else it leaves the
        Placer."""
        if node.attached and not node.draining and self.state.nodes.get(node.node_id) is node:
            return True
        self._kept_placer().discard(node)
        return False

    def _pick_from(self, placer: Placer[NodeState], task: TaskRow) -> NodeState | None:
        # A task in a workspace goes only to a node the workspace is attached to.
        among = ((self.state.workspace_nodes(task.tenant, task.workspace) or ())
                 if task.workspace else None)
        return placer.pick(task.selector, task.node_pin, task.tool, among)

    def _pick(self, task: TaskRow) -> NodeState | None:
        rebuilt = False
        while True:  # each miss of the check lets a node go: this ends
            node = self._pick_from(self._kept_placer(), task)
            if node is None:
                if rebuilt or not self._rebuild_after_miss():
                    return None
                rebuilt = True
            elif self._usable(node):
                return node

    async def _assign(self, task: TaskRow, node: NodeState) -> TaskRow | None:
        st = self.state
        try:
            row = await st.store.transition(
                task.task_id, attempt=task.attempt, node_epoch=0, to=State.ASSIGNED,
                new_attempt=True, node_id=node.node_id, new_node_epoch=node.epoch,
                now_ms=now_ms())
        except StaleWrite:  # cancelled meanwhile, or the node's session moved on
            self.release(task.task_id, node)
            fresh = await st.store.get_task(task.task_id)
            if fresh is not None and fresh.state is State.QUEUED:
                st.queue[task.task_id] = fresh
            return None
        except Exception:
            # Outcome unknown: queue it again (no kick, so a failing store is not retried
            # in a loop). If the write did commit, the retry is refused as stale and the
            # ASSIGNED task is sent when its node re-attaches (at-least-once dispatch).
            self.release(task.task_id, node)
            st.queue[task.task_id] = task
            st.log.exception("assign_failed", task=task.task_id, node=node.node_id)
            return None
        st.publish(row.task_id, ("state", row))
        return row

    async def dispatch(self, batch: list[tuple[TaskRow, NodeState]]) -> None:
        """Sign and send the envelopes of assigned tasks to their nodes."""
        if not batch:
            return
        requests = [EnvelopeRequest(t.task_id, t.attempt, n.node_id, t.node_epoch, t.tenant,
                                    spec_of(t)) for t, n in batch]
        frames = await self.state.encoder.encode(requests)
        for (task, node), frame in zip(batch, frames, strict=True):
            if node.attached and node.epoch == task.node_epoch:
                try:
                    await self.state.send_node(node, frame)
                except FrameTooLarge as e:
                    # Accepted before submissions were bounded by their envelope (or the
                    # limit was lowered since): it fails alone, the node's stream stays up.
                    self.state.log.error("envelope_too_large", task=task.task_id,
                                         node=node.node_id, size=len(frame))
                    await self.state.finish(task, State.FAILED, reason=f"never sent: {e}")
