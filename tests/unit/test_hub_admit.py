"""A submission that finds a free node is inserted placed (issue 9): one store write
instead of an insert and a scheduling pass's QUEUED -> ASSIGNED, and its envelope sent;
older queued tasks keep their turn, and a full fleet or a moved session leaves it queued."""

import asyncio
from pathlib import Path

from cortex.v1 import node_pb2
from cortexd.control.hub import Hub
from cortexd.control.intake import Refused
from cortexd.control.state import NodeState
from cortexd.history import check_store
from cortexd.lifecycle import State
from cortexd.store import NodeRow, TaskRow
from tests.unit.test_hub_bounds import small_hub, task
from tests.unit.test_hub_node_frames import ScriptedLink


async def hub_with_node(tmp_path: Path, capacity: int = 4) -> tuple[Hub, ScriptedLink]:
    hub = await small_hub(tmp_path)
    st = hub.state
    epoch = await st.store.mint_epoch()
    await st.store.node_attached(NodeRow("n1", epoch, {}, capacity, "", 0, True, 1))
    st.nodes["n1"] = NodeState("n1", epoch, 0, {}, capacity, attached=True)
    link = ScriptedLink([])
    st.links[0] = link  # type: ignore[assignment]
    return hub, link


async def sent_tasks(link: ScriptedLink, want: int) -> list[str]:
    for _ in range(100):  # the envelopes go out on a following loop turn
        if sum(f.HasField("task") for f in link.sent) >= want:
            break
        await asyncio.sleep(0.01)
    return [node_pb2.TaskEnvelope.FromString(f.task.body).task_id
            for f in link.sent if f.HasField("task")]


def test_a_submission_with_a_free_node_is_one_write_and_its_envelope_goes_out(
        tmp_path: Path) -> None:
    async def main() -> None:
        hub, link = await hub_with_node(tmp_path)
        st = hub.state
        writes = st.store.writer.writes  # type: ignore[attr-defined]
        row, dedup = await hub.tasks.submit(task(1, 10))
        assert not dedup and (row.state, row.attempt, row.node_id) == (State.ASSIGNED, 1, "n1")
        assert st.store.writer.writes - writes == 1  # type: ignore[attr-defined]
        assert not st.queue and row.task_id in st.nodes["n1"].running
        assert await sent_tasks(link, 1) == [row.task_id]
        again, dedup = await hub.tasks.submit(  # its key again: the same task, no new pick
            TaskRow(task_id="t-00000000000000000009", command="true", idempotency_key="k",
                    created_ms=1, updated_ms=1))
        same, dedup = await hub.tasks.submit(
            TaskRow(task_id="t-00000000000000000008", command="true", idempotency_key="k",
                    created_ms=1, updated_ms=1))
        assert dedup and same.task_id == again.task_id
        assert st.nodes["n1"].running == {row.task_id, again.task_id}
        report = await check_store(st.store)
        assert report.ok, report.summary()
        await st.store.close()

    asyncio.run(main())


def test_queued_tasks_keep_their_turn_and_a_full_node_takes_none(tmp_path: Path) -> None:
    async def main() -> None:
        hub, link = await hub_with_node(tmp_path, capacity=1)
        st = hub.state
        first, _ = await hub.tasks.submit(task(1, 10))
        second, _ = await hub.tasks.submit(task(2, 10))  # the node is full
        third, _ = await hub.tasks.submit(task(3, 10))
        assert first.state is State.ASSIGNED
        assert (second.state, third.state) == (State.QUEUED, State.QUEUED)
        assert list(st.queue) == [second.task_id, third.task_id]
        st.nodes["n1"].running.clear()  # a slot frees: the oldest queued task goes first
        await hub.placement.place()
        assert list(st.queue) == [third.task_id]
        assert await sent_tasks(link, 2) == [first.task_id, second.task_id]
        await st.store.close()

    asyncio.run(main())


def test_submit_many_places_what_fits_and_sends_the_envelopes_together(
        tmp_path: Path) -> None:
    async def main() -> None:
        hub, link = await hub_with_node(tmp_path, capacity=3)
        st = hub.state
        encoded: list[int] = []
        encode = st.encoder.encode

        async def counting(requests):  # type: ignore[no-untyped-def]
            encoded.append(len(requests))
            return await encode(requests)

        st.encoder.encode = counting  # type: ignore[method-assign]
        out = await hub.intake.submit_many([task(n, 10) for n in range(5)])
        rows = [o[0] for o in out if not isinstance(o, Refused)]
        assert [r.state for r in rows] == [State.ASSIGNED] * 3 + [State.QUEUED] * 2
        assert len(await sent_tasks(link, 3)) == 3 and encoded == [3]
        await st.store.close()

    asyncio.run(main())


def test_a_node_whose_session_moved_leaves_the_submission_queued(tmp_path: Path) -> None:
    async def main() -> None:
        hub, link = await hub_with_node(tmp_path)
        st = hub.state
        newer = await st.store.mint_epoch()  # the node re-attached; this hub lags behind
        await st.store.node_attached(NodeRow("n1", newer, {}, 4, "", 0, True, 1))
        row, _ = await hub.tasks.submit(task(1, 10))
        assert row.state is State.QUEUED and list(st.queue) == [row.task_id]
        assert not st.nodes["n1"].running
        (h,) = await st.store.transitions(row.task_id)
        assert (h.to_state, h.accepted) == ("ASSIGNED", False)
        assert await sent_tasks(link, 0) == []
        await st.store.close()

    asyncio.run(main())


def test_a_task_in_a_workspace_is_placed_at_once_only_on_a_node_it_is_attached_to(
        tmp_path: Path) -> None:
    async def main() -> None:
        hub, link = await hub_with_node(tmp_path)
        st = hub.state
        attached = {("default", "ws"): {"n9"}}
        st.workspace_nodes = lambda owner, name: attached.get((owner, name))
        elsewhere, _ = await hub.tasks.submit(TaskRow(
            task_id="t-00000000000000000001", command="true", workspace="ws",
            created_ms=1, updated_ms=1))
        assert elsewhere.state is State.QUEUED and not st.nodes["n1"].running
        st.queue.clear()  # (it waits for its workspace's node; nothing queued before the next)
        attached[("default", "ws")] = {"n1"}
        here, _ = await hub.tasks.submit(TaskRow(
            task_id="t-00000000000000000002", command="true", workspace="ws",
            created_ms=1, updated_ms=1))
        assert (here.state, here.node_id) == (State.ASSIGNED, "n1")
        assert await sent_tasks(link, 1) == [here.task_id]
        await st.store.close()

    asyncio.run(main())
