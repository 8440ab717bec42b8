"""A shard's writes of its nodes' frames (cortexd/shards/writes.py), on a real SQLite store.

The shard's pipeline writes Started, output and Finished on its own connection and
acks them; what each write did reaches the control process (a real ``Hub`` on the same
database file) as ``WROTE``, which frees the slot and tells watchers without a write of
its own. Refused writes go to control as the frames they were.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cortex.v1 import node_pb2
from cortexd.ipc import messages as m
from cortexd.lifecycle import State
from cortexd.shards.writes import MAX_PIPELINE, MAX_TRACKED, Pipeline, ShardWrites, Tracker
from cortexd.store import TaskRow
from cortexd.store.sqlite import SQLiteStore
from tests.unit.test_hub_node_frames import ScriptedLink, assigned_task

EXITED = node_pb2.FINISH_KIND_EXITED


class Wire:
    """The session's two ends: frames pushed to the node, records sent to control."""

    def __init__(self) -> None:
        self.node: list[node_pb2.HubFrame] = []
        self.control: list[list[Any]] = []
        self.records: list[bytes] = []

    def push(self, frame: bytes) -> bool:
        self.node.append(node_pb2.HubFrame.FromString(frame))
        return True

    async def send(self, record: bytes) -> None:
        self.records.append(record)
        self.control.append(m.unpack(record))


def started(t: str, a: int) -> node_pb2.NodeFrame:
    return node_pb2.NodeFrame(started=node_pb2.TaskStarted(task_id=t, attempt=a, pid=7))


def output(t: str, a: int, offset: int, data: bytes) -> node_pb2.NodeFrame:
    return node_pb2.NodeFrame(output=node_pb2.TaskOutput(task_id=t, attempt=a, offset=offset,
                                                         data=data))


def finished(t: str, a: int, end: int, data: bytes = b"") -> node_pb2.NodeFrame:
    return node_pb2.NodeFrame(finished=node_pb2.TaskFinished(
        task_id=t, attempt=a, exit_code=0, kind=EXITED, output_end=end, output=data))


async def run(pipe: Pipeline, wire: Wire, frames: list[node_pb2.NodeFrame]) -> None:
    for frame in frames:
        assert pipe.room() is None
        pipe.put(frame.SerializeToString(), frame, frame.WhichOneof("kind"))
    await pipe.close()


async def shard_store(tmp_path: Path) -> SQLiteStore:
    store = SQLiteStore(str(tmp_path / "c.db"))  # the control process's file
    await store.open()
    return store


@dataclass
class Session:
    """An assigned task, the control store, a shard's store and one session's pipeline."""

    store: SQLiteStore
    shard: SQLiteStore
    task: TaskRow
    writes: ShardWrites
    tracker: Tracker
    wire: Wire
    pipe: Pipeline


@contextlib.asynccontextmanager
async def a_session(tmp_path: Path, epoch_shift: int = 0) -> AsyncIterator[Session]:
    _, store, task, epoch = await assigned_task(tmp_path)
    shard = await shard_store(tmp_path)
    writes, tracker, wire = ShardWrites(shard), Tracker(), Wire()
    pipe = Pipeline("n1", epoch + epoch_shift, writes, tracker, wire.push, wire.send)
    try:
        yield Session(store, shard, task, writes, tracker, wire, pipe)
    finally:
        await shard.close()
        await store.close()


def test_a_task_written_by_its_shard_is_acked_there_and_control_writes_nothing(
        tmp_path: Path) -> None:
    async def main() -> None:
        hub, store, task, epoch = await assigned_task(tmp_path)
        shard = await shard_store(tmp_path)
        wire, t, a = Wire(), task.task_id, task.attempt
        pipe = Pipeline("n1", epoch, ShardWrites(shard), Tracker(), wire.push, wire.send)
        await run(pipe, wire, [started(t, a), output(t, a, 0, b"ab"),
                               node_pb2.NodeFrame(prompt=node_pb2.PromptEvent(task_id=t,
                                                                             attempt=a)),
                               output(t, a, 2, b"cd"), finished(t, a, 6, b"ef")])
        # In the node's order; the prompt (not written here) in its place.
        kinds = [(msg[0], node_pb2.NodeFrame.FromString(msg[3]).WhichOneof("kind"))
                 for msg in wire.control]
        assert kinds == [(m.WROTE, "started"), (m.WROTE, "output"), (m.FRAME, "prompt"),
                         (m.WROTE, "output"), (m.WROTE, "finished")]
        # The outputs need no OutputAck: their task's Finished was queued behind them.
        assert [f.WhichOneof("kind") for f in wire.node] == ["finished_ack"]
        done = await store.get_task(t)
        assert done is not None and (done.state, done.output_bytes) == (State.SUCCEEDED, 6)
        assert await store.read_output(t, a, 0, 100) == b"abcdef"

        # Control takes the outcomes: the slot is free, watchers hear the end, and it
        # neither writes nor acks.
        seen: list[tuple[str, Any]] = []
        hub.state.on_publish.append(lambda task_id, ev: seen.append(ev))
        writes = store.writer.writes
        link = ScriptedLink([wire.records])
        hub.state.links[0] = link  # type: ignore[assignment]
        hub.state.nodes["n1"].running.add(t)
        server = asyncio.get_running_loop().create_task(hub.inbox.serve(0, link))  # type: ignore[arg-type]
        for _ in range(300):
            if any(kind == "state" and ev.state is State.SUCCEEDED for kind, ev in seen):
                break
            await asyncio.sleep(0.01)
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
        assert t not in hub.state.nodes["n1"].running
        assert [ev.state for kind, ev in seen if kind == "state"] == [State.RUNNING,
                                                                      State.SUCCEEDED]
        assert b"".join(ev[2] for kind, ev in seen if kind == "output") == b"abcdef"
        assert store.writer.writes == writes  # no store write in control
        assert link.sent == []  # and no ack from control
        await shard.close()
        await store.close()

    asyncio.run(main())


def test_an_output_with_no_finished_behind_it_is_acked_at_its_durable_end(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with a_session(tmp_path) as s:
            t, a = s.task.task_id, s.task.attempt
            await run(s.pipe, s.wire, [started(t, a), output(t, a, 0, b"abc")])
            assert [(f.WhichOneof("kind"), f.ack.offset) for f in s.wire.node] == [("ack", 3)]
            assert s.wire.control[-1][4] == [0, 3]

    asyncio.run(main())


def test_frames_of_a_superseded_session_go_to_control_as_they_were(tmp_path: Path) -> None:
    async def main() -> None:
        async with a_session(tmp_path, epoch_shift=1) as s:
            t, a = s.task.task_id, s.task.attempt
            await run(s.pipe, s.wire, [started(t, a), output(t, a, 0, b"x"),
                                       finished(t, a, 1, b"x")])
            # Every write is refused (the epoch is not the task's): the Started and output
            # go to control as they were, the Finished's refusals with it; no ack here.
            assert [msg[0] for msg in s.wire.control] == [m.FRAME, m.FRAME, m.WROTE]
            appended, ended = s.wire.control[2][4:]
            assert isinstance(appended, str) and isinstance(ended, str)
            assert s.wire.node == []
            assert not s.tracker.ours(t)  # its next frames go to control unwritten
            assert s.writes.counts["to_control"] == 3 and s.writes.counts["written"] == 0
            same = await s.store.get_task(t)
            assert same is not None and (same.state, same.output_bytes) == (State.ASSIGNED, 0)

    asyncio.run(main())


def test_a_finished_claiming_more_output_than_held_is_left_to_control(tmp_path: Path) -> None:
    async def main() -> None:
        async with a_session(tmp_path) as s:
            t, a = s.task.task_id, s.task.attempt
            await run(s.pipe, s.wire, [finished(t, a, 5, b"de")])  # 0..3 never arrived
            (msg,) = s.wire.control
            assert msg[0] == m.WROTE and msg[4:] == [[0, 0], None]  # a gap: none appended
            assert s.wire.node == []  # control decides (a resync) and answers
            same = await s.store.get_task(t)
            assert same is not None and same.state is State.ASSIGNED

    asyncio.run(main())


def test_the_pipeline_and_the_tracker_are_bounded(tmp_path: Path) -> None:
    async def main() -> None:
        _, store, task, epoch = await assigned_task(tmp_path)
        shard = await shard_store(tmp_path)
        wire = Wire()
        gate = asyncio.Event()

        async def slow_send(record: bytes) -> None:
            await gate.wait()  # control's ring is full
            await wire.send(record)

        pipe = Pipeline("n1", epoch, ShardWrites(shard), Tracker(), wire.push, slow_send)
        frame = node_pb2.NodeFrame(progress=node_pb2.TaskProgress(task_id=task.task_id))
        for _ in range(MAX_PIPELINE):
            assert pipe.room() is None
            pipe.put(frame.SerializeToString(), frame, "progress")
        wait = pipe.room()
        assert wait is not None and not wait.done()
        gate.set()
        await asyncio.wait_for(wait, 5)
        await pipe.close()
        assert len(wire.control) == MAX_PIPELINE

        tracker = Tracker()
        for i in range(MAX_TRACKED + 1):
            tracker.to_control(f"t-{i:020d}")
        assert not tracker.ours(task.task_id)  # overflowed: nothing is written here
        await shard.close()
        await store.close()

    asyncio.run(main())


def test_a_write_that_fails_goes_to_control_and_the_session_goes_on(tmp_path: Path) -> None:
    async def main() -> None:
        async def broken(*args: Any, **kwargs: Any) -> TaskRow:
            raise OSError("disk I/O error")

        async with a_session(tmp_path) as s:
            t, a = s.task.task_id, s.task.attempt
            s.shard.transition = broken  # type: ignore[method-assign]
            await run(s.pipe, s.wire, [started(t, a), output(t, a, 0, b"z")])
            # The failed Started goes to control (which writes it again), in its place;
            # the output's own write (started before the failure was known) stands.
            assert [msg[0] for msg in s.wire.control] == [m.FRAME, m.WROTE]
            assert s.writes.counts == {"written": 1, "to_control": 1, "failed": 1}
            assert await s.store.read_output(t, a, 0, 10) == b"z"

    asyncio.run(main())


def test_an_end_whose_news_was_lost_with_its_shard_reaches_watchers_at_re_attach(
        tmp_path: Path) -> None:
    """A shard that died between its commit and its WROTE: control still holds the task
    as running; when the node attaches again, the stored end is told to watchers."""
    async def main() -> None:
        hub, store, task, epoch = await assigned_task(tmp_path)
        t, a = task.task_id, task.attempt
        hub.state.nodes["n1"].running.add(t)
        done = await store.end_attempt(t, attempt=a, node_epoch=epoch, to=State.SUCCEEDED,
                                       exit_code=0, reason="", output_end=0, now_ms=2)
        assert isinstance(done.ended, TaskRow)
        seen: list[tuple[str, Any]] = []
        hub.state.on_publish.append(lambda task_id, ev: seen.append(ev))
        hello = node_pb2.Hello(node_id="n1", capacity=4)
        await hub.sessions.attach(0, 1, "n1", hello.SerializeToString())
        assert [ev.state for kind, ev in seen if kind == "state"] == [State.SUCCEEDED]
        assert t not in hub.state.nodes["n1"].running
        await store.close()

    asyncio.run(main())


def test_a_shard_holds_a_bounded_number_of_bytes_for_all_its_sessions(tmp_path: Path) -> None:
    """A stalled control process (its ring full) holds the nodes, not memory: past the
    shard's byte budget every session's reader waits."""
    async def main() -> None:
        _, store, task, epoch = await assigned_task(tmp_path)
        shard = await shard_store(tmp_path)
        writes = ShardWrites(shard, max_bytes=100_000)
        gate = asyncio.Event()
        wire = Wire()

        async def stalled(record: bytes) -> None:
            await gate.wait()
            await wire.send(record)

        pipes = [Pipeline(f"n{i}", epoch, writes, Tracker(), wire.push, stalled)
                 for i in range(3)]
        payload = node_pb2.NodeFrame(log_chunk=node_pb2.LogChunk(data=b"x" * 40_000))
        raw = payload.SerializeToString()
        for pipe in pipes[:2]:
            for _ in range(2):
                if pipe.room() is None:
                    pipe.put(raw, payload, "log_chunk")
        assert writes.held >= 100_000
        wait = pipes[2].room()  # an empty session waits for the shard's room too
        assert wait is not None and not wait.done()
        gate.set()
        await asyncio.wait_for(wait, 5)
        for pipe in pipes:
            await pipe.close()
        assert writes.held == 0
        await shard.close()
        await store.close()

    asyncio.run(main())
