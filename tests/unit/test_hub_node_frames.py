"""The control process's node-frame path against a real SQLite store, without sockets.

Ring records go in through a scripted link; what the hub sends to the shard is captured.
"""

import asyncio
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cortex.v1 import node_pb2
from cortexd import config
from cortexd.control.hub import Hub
from cortexd.control.state import NodeState
from cortexd.ipc import messages as m
from cortexd.lifecycle import State
from cortexd.serializers.envelope import InlineEncoder
from cortexd.store import TaskRow
from cortexd.store.sqlite import SQLiteStore


class ScriptedLink:
    """A shard's ring as the control process sees it: batches in, records out."""

    def __init__(self, batches: list[list[bytes]], gap_s: float = 0.0) -> None:
        self.batches = batches
        self.gap_s = gap_s  # between batches: the hub handles one before the next arrives
        self.sent: list[node_pb2.HubFrame] = []
        self.closed: list[str] = []  # reasons of the sessions the hub closed
        self.given = 0

    async def recv(self) -> list[bytes]:
        if self.batches:
            if self.given:
                await asyncio.sleep(self.gap_s)
            self.given += 1
            return self.batches.pop(0)
        await asyncio.Event().wait()  # nothing more: wait to be cancelled
        return []

    def send_nowait(self, record: bytes) -> bool:
        msg = m.unpack(record)
        if msg[0] == m.SEND:
            self.sent.append(node_pb2.HubFrame.FromString(msg[3]))
        elif msg[0] == m.CLOSE:
            self.closed.append(str(msg[3]))
        return True


def frame(epoch: int, **kind: Any) -> bytes:
    return m.pack(m.FRAME, "n1", epoch, node_pb2.NodeFrame(**kind).SerializeToString())


async def assigned_task(tmp_path: Path) -> tuple[Hub, SQLiteStore, TaskRow, int]:
    settings = config.load(None, {"insecure_loopback": True}, environ={})
    store = SQLiteStore(str(tmp_path / "c.db"))
    await store.open()
    hub = Hub(settings, store, InlineEncoder(Ed25519PrivateKey.generate(), 60_000), "h")
    epoch = await store.mint_epoch()
    hub.state.nodes["n1"] = NodeState("n1", epoch, 0, {}, 4, attached=True)
    row, _ = await store.create_task(TaskRow(task_id="t-00000000000000000001",
                                             command="true", created_ms=1, updated_ms=1))
    hub.state.queue[row.task_id] = row
    hub.state.links[0] = ScriptedLink([])  # type: ignore[assignment]
    await hub.placement.place()
    task = await store.get_task(row.task_id)
    assert task is not None and task.state is State.ASSIGNED
    return hub, store, task, epoch


async def serve(hub: Hub, batches: list[list[bytes]], want: int,
                gap_s: float = 0.0) -> list[node_pb2.HubFrame]:
    link = ScriptedLink(batches, gap_s)
    hub.state.links[0] = link  # type: ignore[assignment]
    server = asyncio.get_running_loop().create_task(hub.inbox.serve(0, link))  # type: ignore[arg-type]
    for _ in range(500):
        if len(link.sent) >= want:
            break
        await asyncio.sleep(0.01)
    server.cancel()
    await asyncio.gather(server, return_exceptions=True)
    return link.sent


def test_a_whole_task_in_one_batch_needs_no_read_and_no_output_ack(tmp_path: Path) -> None:
    async def main() -> None:
        hub, store, task, epoch = await assigned_task(tmp_path)
        reads = 0
        get_task = store.get_task

        async def counting(task_id: str) -> TaskRow | None:
            nonlocal reads
            reads += 1
            return await get_task(task_id)

        store.get_task = counting  # type: ignore[method-assign]
        t, a = task.task_id, task.attempt
        sent = await serve(hub, [[
            frame(epoch, started=node_pb2.TaskStarted(task_id=t, attempt=a, pid=7)),
            frame(epoch, output=node_pb2.TaskOutput(task_id=t, attempt=a, offset=0, data=b"ab")),
            frame(epoch, output=node_pb2.TaskOutput(task_id=t, attempt=a, offset=2, data=b"cd")),
            frame(epoch, finished=node_pb2.TaskFinished(task_id=t, attempt=a, exit_code=0,
                                                        kind=node_pb2.FINISH_KIND_EXITED,
                                                        output_end=4)),
        ]], want=1)
        assert [f.WhichOneof("kind") for f in sent] == ["finished_ack"]
        assert reads == 0
        store.get_task = get_task  # type: ignore[method-assign]
        done = await get_task(t)
        assert done is not None and (done.state, done.output_bytes, done.reason) == (
            State.SUCCEEDED, 4, "")
        assert await store.read_output(t, a, 0, 100) == b"abcd"
        assert [h.to_state for h in await store.transitions(t) if h.accepted] == [
            "ASSIGNED", "RUNNING", "SUCCEEDED"]
        await store.close()

    asyncio.run(main())


def test_a_finished_that_claims_more_output_than_held_is_not_an_end_until_resent(
        tmp_path: Path) -> None:
    async def main() -> None:
        hub, store, task, epoch = await assigned_task(tmp_path)
        t, a = task.task_id, task.attempt

        def finished(end: int) -> bytes:
            return frame(epoch, finished=node_pb2.TaskFinished(
                task_id=t, attempt=a, exit_code=0, kind=node_pb2.FINISH_KIND_EXITED,
                output_end=end))

        link = ScriptedLink([
            [frame(epoch, started=node_pb2.TaskStarted(task_id=t, attempt=a, pid=7))],
            [frame(epoch, output=node_pb2.TaskOutput(task_id=t, attempt=a, offset=0,
                                                     data=b"ab"))],
            [finished(5)]], gap_s=0.2)
        hub.state.links[0] = link  # type: ignore[assignment]
        server = asyncio.get_running_loop().create_task(hub.inbox.serve(0, link))  # type: ignore[arg-type]
        for _ in range(500):
            if link.closed:
                break
            await asyncio.sleep(0.01)
        # Not an end: no FinishedAck, the session is closed so that the node resends.
        assert [f.WhichOneof("kind") for f in link.sent] == ["ack"]
        assert link.closed and "holds 2 of 5 output bytes" in link.closed[0]
        running = await store.get_task(t)
        assert running is not None and running.state is State.RUNNING
        # The node came back and finished again with nothing new: the end is recorded,
        # saying plainly that the output is incomplete (an exit 0 is not SUCCEEDED).
        await hub.attempts.on_frame("n1", epoch, node_pb2.NodeFrame.FromString(
            m.unpack(finished(5))[3]))
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
        assert link.sent[-1].WhichOneof("kind") == "finished_ack"
        done = await store.get_task(t)
        assert done is not None and done.state is State.FAILED and done.exit_code == 0
        assert "output incomplete: the hub holds 2 of 5 output bytes" in done.reason
        await store.close()

    asyncio.run(main())


def test_after_the_end_more_output_and_finished_frames_change_nothing(
        tmp_path: Path) -> None:
    async def main() -> None:
        hub, store, task, epoch = await assigned_task(tmp_path)
        t, a = task.task_id, task.attempt
        fin = node_pb2.TaskFinished(task_id=t, attempt=a, exit_code=0,
                                    kind=node_pb2.FINISH_KIND_EXITED, output_end=2)
        await serve(hub, [[
            frame(epoch, output=node_pb2.TaskOutput(task_id=t, attempt=a, offset=0, data=b"ok")),
            frame(epoch, finished=fin)]], want=1)
        late = node_pb2.TaskFinished(task_id=t, attempt=a, exit_code=3,
                                     kind=node_pb2.FINISH_KIND_EXITED, output_end=9)
        await serve(hub, [[
            frame(epoch, output=node_pb2.TaskOutput(task_id=t, attempt=a, offset=2,
                                                    data=b"forged")),
            frame(epoch, finished=late)]], want=2)
        done = await store.get_task(t)
        assert done is not None and (done.state, done.output_bytes, done.exit_code) == (
            State.SUCCEEDED, 2, 0)
        assert await store.read_output(t, a, 0, 100) == b"ok"
        refused = [h for h in await store.transitions(t) if not h.accepted]
        assert any("output after the end refused" in h.reason for h in refused)
        assert any(h.to_state == "FAILED" for h in refused)  # the late Finished, recorded
        await store.close()

    asyncio.run(main())


def test_a_folded_finished_is_one_write_and_needs_no_read(tmp_path: Path) -> None:
    """Issue 9: a task that ended quickly sends one TaskFinished with its output inside;
    the append and the end go to the store as one write (one commit), then the ack."""
    async def main() -> None:
        hub, store, task, epoch = await assigned_task(tmp_path)
        t, a = task.task_id, task.attempt
        batches, writes = store.writer.batches, store.writer.writes
        sent = await serve(hub, [[frame(epoch, finished=node_pb2.TaskFinished(
            task_id=t, attempt=a, exit_code=0, kind=node_pb2.FINISH_KIND_EXITED,
            output_end=3, output=b"hi\n"))]], want=1)
        assert [f.WhichOneof("kind") for f in sent] == ["finished_ack"]
        assert (store.writer.batches - batches, store.writer.writes - writes) == (1, 1)
        done = await store.get_task(t)
        assert done is not None and (done.state, done.output_bytes) == (State.SUCCEEDED, 3)
        assert await store.read_output(t, a, 0, 100) == b"hi\n"
        assert [h.to_state for h in await store.transitions(t) if h.accepted] == [
            "ASSIGNED", "SUCCEEDED"]
        await store.close()

    asyncio.run(main())
