"""Placement: queued tasks onto this host's nodes, then their signed envelopes out.

One pass (woken by :meth:`HubState.kick`) places up to ``MAX_PLACEMENTS_PER_PASS``
tasks with the pure :class:`cortexd.scheduler.Placer`; tasks no local node can
take are offered to other hosts (offers.py). A placement is durable before its
envelope is sent: QUEUED -> ASSIGNED is a conditional write, all of a pass's
writes in flight together so they share one group commit. Dispatch is
at-least-once (an ASSIGNED task is sent again when its node re-attaches).

The Placer (a heap over the attached nodes) is kept across passes and rebuilt at
most every ``PLACER_REBUILD_S`` — building it is O(nodes), and at 10,000 nodes one
build per pass was the part of a task's cost that grew with the fleet (issue 9).
A pick from a kept Placer is checked against the node's current state (the same
session object, attached, not draining; the Placer checks room and key); when it
fails, or a kept Placer finds no node, the Placer is rebuilt and asked again, so a
task is never left queued because the Placer was old. What an old Placer can cost
is spread: a node freed since the build waits for the next rebuild to be preferred.

A new task that finds a free node while nothing is queued before it (:meth:`admit`)
is inserted already placed (issue 9): the insert and QUEUED -> ASSIGNED, the same
fenced conditional write, share one commit, and no scheduling pass runs for it. Its
node is picked from the kept Placer only (a miss is not worth an O(nodes) rebuild per
submission: the task is queued, and the pass that follows rebuilds). The envelopes of
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
PLACER_REBUILD_S = 0.1


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
        self._built_at = 0.0
        self._built_for = 0  # len(st.nodes) at the build: a new node forces a rebuild
        self._pass_at = 0.0  # when the current pass started: a Placer built since is fresh
        self._outbox: list[tuple[TaskRow, NodeState]] = []  # placed at insert, to send

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
        if not st.queue:  # most kicks (a task ended) find nothing queued: skip O(nodes)
            return
        self._pass_at = time.monotonic()
        if self._fresh_placer() is None:
            if st.coord.clustered:
                self.offers.offer_soon(list(st.queue.values()))
            return
        placed: list[tuple[TaskRow, NodeState]] = []
        unplaced: list[TaskRow] = []
        for task in list(st.queue.values()):
            if len(placed) >= MAX_PLACEMENTS_PER_PASS:
                st.kick()  # more next pass
                break
            node, placer = self._pick(task)
            if node is None or placer is None:
                unplaced.append(task)
                continue
            self._picks += 1
            node.last_picked = self._picks
            node.running.add(task.task_id)
            placer.placed(node)
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
        finally:
            self.release(task.task_id, node)  # taken again below if it was placed
        return self.admitted(row, created, node), created

    def admitted(self, row: TaskRow, created: bool, node: NodeState | None,
                 sent: bool = False) -> TaskRow:
        """A task's insert committed (placed on ``node``'s session, or queued): take it
        into the hub's view, publish it, send it (``sent``: its shard did) or wake the
        scheduler. Idempotent: a task the view already holds is left as it is."""
        st = self.state
        if not created:
            return row
        if row.state is State.ASSIGNED:
            held = st.nodes.get(row.node_id)
            if held is None or held.epoch != row.node_epoch or row.task_id in held.running:
                # Not the session it was fenced on (then the node's re-attach resends
                # it), or already taken.
                return row
            held.running.add(row.task_id)
            st.publish(row.task_id, ("state", row))
            if held.attached and not sent and (node is None or node is held):
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
        :meth:`release`), or None: insert it queued."""
        return self._reserve(task)

    @staticmethod
    def release(task_id: str, node: NodeState | None) -> None:
        if node is not None:
            node.running.discard(task_id)

    def _reserve(self, task: TaskRow) -> NodeState | None:
        st = self.state
        if st.queue:  # older tasks wait: they go first, through the pass
            return None
        placer = self._fresh_placer()
        node = None if placer is None else self._pick_from(placer, task)
        if placer is None or node is None or not node.attached or node.draining \
                or st.nodes.get(node.node_id) is not node:
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

    def _fresh_placer(self, force: bool = False) -> Placer[NodeState] | None:
        """The kept Placer, rebuilt when old (or ``force``); None: no local node at all."""
        st = self.state
        now = time.monotonic()
        if (force or self._placer is None or now - self._built_at >= PLACER_REBUILD_S
                or len(st.nodes) != self._built_for):
            local = [n for n in st.nodes.values() if n.attached and not n.draining]
            # The nodes themselves: no copy per build.
            self._placer = Placer(local, _running) if local else None
            self._built_at, self._built_for = now, len(st.nodes)
        return self._placer

    def _pick_from(self, placer: Placer[NodeState], task: TaskRow) -> NodeState | None:
        # A task in a workspace goes only to a node the workspace is attached to.
        among = ((self.state.workspace_nodes(task.tenant, task.workspace) or ())
                 if task.workspace else None)
        return placer.pick(task.selector, task.node_pin, task.tool, among)

    def _pick(self, task: TaskRow) -> tuple[NodeState | None, Placer[NodeState] | None]:
        for _ in range(2):  # the kept Placer, then (if it fails) a rebuilt one
            placer = self._fresh_placer()
            if placer is None:
                return None, None
            fresh = self._built_at >= self._pass_at
            node = self._pick_from(placer, task)
            if node is not None and node.attached and not node.draining \
                    and self.state.nodes.get(node.node_id) is node:
                return node, placer
            if fresh:
                return None, placer
            self._fresh_placer(force=True)
        return None, None

    async def _assign(self, task: TaskRow, node: NodeState) -> TaskRow | None:
        st = self.state
        try:
            row = await st.store.transition(
                task.task_id, attempt=task.attempt, node_epoch=0, to=State.ASSIGNED,
                new_attempt=True, node_id=node.node_id, new_node_epoch=node.epoch,
                now_ms=now_ms())
        except StaleWrite:  # cancelled meanwhile, or the node's session moved on
            node.running.discard(task.task_id)
            fresh = await st.store.get_task(task.task_id)
            if fresh is not None and fresh.state is State.QUEUED:
                st.queue[task.task_id] = fresh
            return None
        except Exception:
            # Outcome unknown: queue it again (no kick, so a failing store is not retried
            # in a loop). If the write did commit, the retry is refused as stale and the
            # ASSIGNED task is sent when its node re-attaches (at-least-once dispatch).
            node.running.discard(task.task_id)
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
