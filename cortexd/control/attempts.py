"""Task attempts as their node reports them: the frames of an attached session.

Every write about a task is conditional on its (attempt, node session epoch) in
the store, so a frame from a superseded session or attempt is refused there,
recorded, and answered with a cancel instead of being believed. An ack is sent
only after the commit that makes it true, and never through a fenced session.
"""

from typing import Any

from cortex.ids import is_task_id
from cortex.v1 import node_pb2
from cortexd.control.finishes import Act, decide_finish
from cortexd.control.state import HubState, NodeState, cancel_frame, now_ms
from cortexd.ipc import messages as m
from cortexd.lifecycle import State, finished_state, folded_output
from cortexd.store import StaleWrite, TaskRow
from cortexd.store.base import unpack_row
from cortexd.store.rows import Ended

#: Rejections after which a new attempt may succeed (the envelope was fine).
RETRYABLE_REJECTIONS = frozenset({"stale_epoch", "expired", "capacity", "draining"})


class Attempts:
    def __init__(self, state: HubState) -> None:
        self.state = state

    async def on_frame(self, node_id: str, epoch: int, frame: node_pb2.NodeFrame,
                       finished_follows: bool = False) -> None:
        """``finished_follows``: for an output frame, its task's finished frame is
        already queued behind it. Its FinishedAck (sent after the terminal state is
        durable) then ends the task at the node, which needs no OutputAck: one frame
        less through ring, shard and stream."""
        st = self.state
        node = st.nodes.get(node_id)
        if node is None:
            return
        if node.epoch == epoch and not node.attached:
            st.fenced_frames += 1  # its shard lost its lease: the store will refuse it
        kind = frame.WhichOneof("kind")
        if kind == "output":
            await self._on_output(node, epoch, frame.output, ack=not finished_follows)
        elif kind == "started":
            await self._on_started(node, epoch, frame.started)
        elif kind == "finished":
            await self._on_finished(node, epoch, frame.finished)
        elif kind == "rejected":
            await self._on_rejected(node, epoch, frame.rejected)
        elif kind == "progress":
            self._on_progress(node, epoch, frame.progress)
        elif kind == "prompt":
            self._on_prompt(node, epoch, frame.prompt)
        elif kind == "log_chunk" and node.epoch == epoch:
            st.log_reads.deliver(node_id, frame.log_chunk)
        elif kind in ("call_reply", "tool_event") and node.epoch == epoch:
            st.node_calls.deliver(node_id, frame)
        elif kind == "draining" and node.epoch == epoch:
            node.draining = True
            st.log.info("node_draining", node=node_id, reason=frame.draining.reason)

    async def _kill_stray(self, node: NodeState, epoch: int, task_id: str, attempt: int,
                          why: str) -> None:
        if node.epoch == epoch and node.attached:
            await self.state.send_node(node, cancel_frame(task_id, attempt, why))

    async def _on_output(self, node: NodeState, epoch: int, out: node_pb2.TaskOutput,
                         ack: bool = True) -> None:
        if not is_task_id(out.task_id):
            return
        try:
            result: tuple[int, int] | StaleWrite = await self.state.store.append_output(
                out.task_id, out.attempt, epoch, out.offset, out.data)
        except StaleWrite as e:
            result = e
        after = await self._appended(node, epoch, out.task_id, out.attempt, out.offset,
                                     out.data, result)
        if after is not None and ack and node.epoch == epoch:
            await self.state.send_node(node, node_pb2.HubFrame(ack=node_pb2.OutputAck(
                task_id=out.task_id, attempt=out.attempt, offset=after)))

    async def _appended(self, node: NodeState, epoch: int, task_id: str, attempt: int,
                        offset: int, data: bytes,
                        result: tuple[int, int] | StaleWrite) -> int | None:
        """After an append committed: the new durable end to watchers and the journal
        (None: refused, and the stray process told to stop)."""
        st = self.state
        if isinstance(result, StaleWrite):
            await self._kill_stray(node, epoch, task_id, attempt,
                                   "output for a superseded attempt")
            return None
        before, after = result
        st.remember_end(task_id, attempt, after)
        if after > before:
            fresh = data[before - offset:]
            st.publish(task_id, ("output", (attempt, before, fresh)))
            await st.journals.appended(task_id, attempt, before, fresh)
        return after

    def _on_progress(self, node: NodeState, epoch: int, p: node_pb2.TaskProgress) -> None:
        if node.epoch == epoch and p.task_id in node.running:  # bounded by running tasks
            self.state.progress[p.task_id] = (p.attempt, p.spooled_bytes, p.held_back_bytes)

    def _on_prompt(self, node: NodeState, epoch: int, ev: node_pb2.PromptEvent) -> None:
        """The node's edge detector saw a prompt: remember it, wake the task's watchers."""
        if node.epoch != epoch or ev.task_id not in node.running:
            return
        self.state.remember_prompt(ev)
        self.state.publish(ev.task_id, ("prompt", ev))

    async def _on_started(self, node: NodeState, epoch: int, st: node_pb2.TaskStarted) -> None:
        if not is_task_id(st.task_id):
            return
        store = self.state.store
        try:
            row = await store.transition(st.task_id, attempt=st.attempt, node_epoch=epoch,
                                         to=State.RUNNING, now_ms=now_ms())
        except StaleWrite:
            task = await store.get_task(st.task_id)
            if task is None or task.attempt != st.attempt or task.state.terminal:
                await self._kill_stray(node, epoch, st.task_id, st.attempt,
                                       "attempt superseded")
            return
        self.state.publish(row.task_id, ("state", row))

    async def _on_finished(self, node: NodeState, epoch: int, fin: node_pb2.TaskFinished) -> None:
        if not is_task_id(fin.task_id):
            return
        st = self.state
        folded = folded_output(fin.output, fin.output_end)
        # One write (issue 9): the folded output, then the end if it needs no decision
        # here (the durable end is the node's, no cancel asked): one commit, not two.
        done = await st.store.end_attempt(
            fin.task_id, attempt=fin.attempt, node_epoch=epoch,
            to=finished_state(fin.kind, fin.exit_code, False), exit_code=fin.exit_code,
            reason=fin.reason, output_end=fin.output_end, output=folded, now_ms=now_ms())
        await self._after_end(node, epoch, fin, folded, done, acked=False)

    async def on_written(self, node_id: str, epoch: int, frame: node_pb2.NodeFrame,
                         what: list[Any]) -> None:
        """A frame its shard wrote (``cortexd/shards/writes.py``, ``m.WROTE``): what the
        write did, handled as if this process had made it (the shard acked what it
        could: an output, a durable end)."""
        st = self.state
        observer = getattr(st.store, "observer", None)
        node = st.nodes.get(node_id)
        kind = frame.WhichOneof("kind")
        if kind == "started":
            row = unpack_row(what[0])
            if observer is not None:
                observer.transitioned(row)
            st.publish(row.task_id, ("state", row))
        elif kind == "output":
            out, result = frame.output, (int(what[0][0]), int(what[0][1]))
            if observer is not None:
                observer.appended(*result)
            if node is not None:
                await self._appended(node, epoch, out.task_id, out.attempt, out.offset,
                                     out.data, result)
        elif kind == "finished":
            await self._written_end(node, epoch, frame.finished, what[0], what[1], observer)

    async def _written_end(self, node: NodeState | None, epoch: int,
                           fin: node_pb2.TaskFinished, appended: list[int] | str | None,
                           ended: list[Any] | str | None, observer: Any) -> None:
        done_appended: tuple[int, int] | StaleWrite | None = None
        if isinstance(appended, list):
            done_appended = (int(appended[0]), int(appended[1]))
            if observer is not None:
                observer.appended(*done_appended)
        elif isinstance(appended, str):
            done_appended = StaleWrite(appended)
        done_ended: TaskRow | StaleWrite | None = None
        if isinstance(ended, list):
            done_ended = unpack_row(ended)
            if observer is not None:
                observer.transitioned(done_ended)
        elif isinstance(ended, str):
            done_ended = StaleWrite(ended)
        if node is None:  # unknown here (cannot happen while its shard lives): still ended
            if isinstance(done_ended, TaskRow):
                self.state.ended(done_ended)
                self.state.kick()
            return
        folded = folded_output(fin.output, fin.output_end)
        await self._after_end(node, epoch, fin, folded, Ended(done_appended, done_ended),
                              acked=isinstance(done_ended, TaskRow))

    async def _after_end(self, node: NodeState, epoch: int, fin: node_pb2.TaskFinished,
                         folded: bytes, done: Ended, acked: bool) -> None:
        """After a Finished's one write (here or in its shard): publish what it appended,
        record the end, or decide it. ``acked``: the node has its FinishedAck already."""
        st = self.state
        if done.appended is not None:
            await self._appended(node, epoch, fin.task_id, fin.attempt,
                                 fin.output_end - len(folded), folded, done.appended)
        if done.ended is not None:
            await self._recorded(node, epoch, fin, done.ended, acked)
            return
        # The end needs a decision: read the task (the transition below is conditional
        # on attempt and epoch either way).
        task = await st.store.get_task(fin.task_id)
        if task is None:
            await self._ack_finished(node, epoch, fin)
            return
        held, cancel_requested = fin.output_end, task.cancel_requested
        if task.attempt == fin.attempt and not task.state.terminal:
            held = task.output_bytes  # (an ended task's Finished is refused below)
        resync = st.resyncs.get(fin.task_id)
        verdict = decide_finish(fin.kind, fin.exit_code, fin.reason, fin.output_end, held,
                                cancel_requested,
                                resync[1] if resync and resync[0] == fin.attempt else None)
        if verdict.act is Act.RESYNC:
            if node.epoch == epoch and node.attached:
                st.resyncs[fin.task_id] = (fin.attempt, held)
                st.log.warning("output_gap", task=fin.task_id, attempt=fin.attempt,
                               held=held, node_end=fin.output_end, node=node.node_id)
                await st.to_shard(node.shard, m.pack(
                    m.CLOSE, node.node_id, epoch, f"the hub holds {held} of "
                    f"{fin.output_end} output bytes of task {fin.task_id}: reconnect and "
                    "resend the rest"))
            return  # not ended, not acked: the node keeps the task and its spool
        try:
            row: TaskRow | StaleWrite = await st.store.transition(
                fin.task_id, attempt=fin.attempt, node_epoch=epoch, to=verdict.state,
                exit_code=fin.exit_code, reason=verdict.reason, now_ms=now_ms())
        except StaleWrite as e:
            row = e
        await self._recorded(node, epoch, fin, row)

    async def _recorded(self, node: NodeState, epoch: int, fin: node_pb2.TaskFinished,
                        row: TaskRow | StaleWrite, acked: bool = False) -> None:
        """The end is durable (or was refused as stale, and recorded): ack it."""
        st = self.state
        if isinstance(row, StaleWrite):
            st.log.info("late_result_rejected", task=fin.task_id, attempt=fin.attempt,
                        epoch=epoch, why=str(row))
        else:
            node.running.discard(row.task_id)
            st.ended(row)
            st.kick()
        if not acked:
            await self._ack_finished(node, epoch, fin)

    async def _ack_finished(self, node: NodeState, epoch: int,
                            fin: node_pb2.TaskFinished) -> None:
        if node.epoch == epoch and node.attached:  # never ack through a fenced session
            await self.state.send_node(node, node_pb2.HubFrame(
                finished_ack=node_pb2.FinishedAck(task_id=fin.task_id, attempt=fin.attempt)))

    async def _on_rejected(self, node: NodeState, epoch: int, rej: node_pb2.TaskRejected) -> None:
        st = self.state
        st.log.warning("envelope_rejected", node=node.node_id, task=rej.task_id,
                       attempt=rej.attempt, code=rej.code, reason=rej.reason)
        task = await st.store.get_task(rej.task_id) if is_task_id(rej.task_id) else None
        if task is None or task.attempt != rej.attempt or task.node_epoch != epoch:
            return
        node.running.discard(task.task_id)
        if rej.code == "draining":
            node.draining = True
        st.node_changed(node)
        retry = rej.code in RETRYABLE_REJECTIONS and task.attempt < st.settings.max_attempts
        target = State.QUEUED if retry else State.FAILED
        try:
            row = await st.store.transition(
                task.task_id, attempt=task.attempt, node_epoch=epoch, to=target,
                reason=f"node {node.node_id} refused the envelope: {rej.code}: {rej.reason}",
                now_ms=now_ms())
        except StaleWrite:
            return
        if retry:
            st.queue[row.task_id] = row
            st.kick()
        st.publish(row.task_id, ("state", row))
