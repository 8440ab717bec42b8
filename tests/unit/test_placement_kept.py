"""The control process's Placer is kept and told what changes (issue 9, item 5): a
task's placement costs O(log n) however long the hub runs, never an O(nodes) rebuild
now and then; a slot freed is taken at once; a change nobody told it of is found by
the pass that misses, within ``MISS_REBUILD_S``."""

import asyncio
from pathlib import Path

import pytest

from cortexd.control import placement
from cortexd.control.hub import Hub
from cortexd.control.operate import Operations, SupervisorLink
from cortexd.control.state import NodeState
from cortexd.lifecycle import State
from cortexd.store import NodeRow
from tests.unit.test_hub_admit import sent_tasks
from tests.unit.test_hub_bounds import small_hub, task
from tests.unit.test_hub_node_frames import ScriptedLink


async def hub_with_nodes(tmp_path: Path, count: int, capacity: int) -> Hub:
    hub = await small_hub(tmp_path)
    st = hub.state
    epoch = await st.store.mint_epoch()
    for i in range(count):
        await st.store.node_attached(NodeRow(f"n{i}", epoch, {}, capacity, "", 0, True, 1))
        st.nodes[f"n{i}"] = NodeState(f"n{i}", epoch, 0, {}, capacity, attached=True)
    st.links[0] = ScriptedLink([])  # type: ignore[assignment]
    return hub


def test_a_long_run_of_tasks_builds_the_placer_once(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A second of the clock per task (the old Placer was rebuilt, O(nodes), whenever it
    was 100 ms old): one build for 300 tasks on 1,000 nodes, each task on the node
    ``pick`` would choose (the least recently picked of the idle ones: a new one)."""
    clock = [1000.0]

    def monotonic() -> float:
        clock[0] += 1.0
        return clock[0]

    monkeypatch.setattr(placement.time, "monotonic", monotonic)

    async def main() -> None:
        hub = await hub_with_nodes(tmp_path, 1000, 4)
        st = hub.state
        used = []
        for n in range(300):
            row, _ = await hub.tasks.submit(task(n, 10))
            assert row.state is State.ASSIGNED
            used.append(row.node_id)
            await st.finish(row, State.SUCCEEDED, "done")  # its slot frees (st.ended)
        assert hub.placement.builds == 1
        assert len(set(used)) == 300
        assert all(not node.running for node in st.nodes.values())
        await st.store.close()

    asyncio.run(main())


def test_a_slot_freed_is_taken_at_once_without_a_rebuild(tmp_path: Path) -> None:
    async def main() -> None:
        hub = await hub_with_nodes(tmp_path, 3, 1)
        st = hub.state
        rows = [(await hub.tasks.submit(task(n, 10)))[0] for n in range(3)]
        assert {r.node_id for r in rows} == {"n0", "n1", "n2"}
        full, _ = await hub.tasks.submit(task(3, 10))
        assert full.state is State.QUEUED  # every node is full
        await hub.tasks.cancel(full.task_id, "")
        await st.finish(rows[1], State.SUCCEEDED, "done")
        again, _ = await hub.tasks.submit(task(4, 10))
        assert (again.state, again.node_id) == (State.ASSIGNED, rows[1].node_id)
        assert hub.placement.builds == 1
        await st.store.close()

    asyncio.run(main())


def test_nodes_attached_detached_and_undrained_are_told(tmp_path: Path) -> None:
    async def main() -> None:
        hub = await hub_with_nodes(tmp_path, 1, 1)
        st = hub.state
        first, _ = await hub.tasks.submit(task(0, 10))
        assert first.node_id == "n0"
        await hub.sessions.detach("n0", st.nodes["n0"].epoch, "test")
        st.nodes["n1"] = n1 = NodeState("n1", await st.store.mint_epoch(), 0, {}, 2)
        n1.attached = True
        hub.placement.changed(n1)  # as attach does once the Welcome is out
        row, _ = await hub.tasks.submit(task(1, 10))
        assert row.node_id == "n1"
        n1.draining = True  # as a drain does (the pick's check lets it go)
        held, _ = await hub.tasks.submit(task(2, 10))
        assert held.state is State.QUEUED
        await hub.tasks.cancel(held.task_id, "")
        Operations(hub, SupervisorLink(None)).undrain_node("n1")  # type: ignore[arg-type]
        row, _ = await hub.tasks.submit(task(3, 10))
        assert row.node_id == "n1"
        assert hub.placement.builds == 1
        await st.store.close()

    asyncio.run(main())


def test_a_change_not_told_is_found_by_a_pass_after_the_backstop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(placement.time, "monotonic", lambda: clock[0])

    async def main() -> None:
        hub = await hub_with_nodes(tmp_path, 1, 1)
        st = hub.state
        first, _ = await hub.tasks.submit(task(0, 10))
        second, _ = await hub.tasks.submit(task(1, 10))
        assert second.state is State.QUEUED
        await hub.placement.place()  # misses: rebuilds, still full
        assert hub.placement.builds == 2 and list(st.queue) == [second.task_id]
        st.nodes["n0"].running.clear()  # a slot freed that nobody told of
        clock[0] += placement.MISS_REBUILD_S / 2
        await hub.placement.place()  # within the backstop: no rebuild, still queued
        assert hub.placement.builds == 2 and list(st.queue) == [second.task_id]
        clock[0] += placement.MISS_REBUILD_S / 2
        await hub.placement.place()
        assert hub.placement.builds == 3 and not st.queue
        assert await sent_tasks(st.links[0], 2) == [first.task_id, second.task_id]  # type: ignore[arg-type]
        await st.store.close()

    asyncio.run(main())
