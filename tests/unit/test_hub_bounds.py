"""What the hub accepts it can deliver, and one task never takes a node's stream down
(issue 9, "a poison task"): a submission whose signed envelope could be over the node
stream's frame limit is refused with the limit named; one that got in anyway (stored
before the bound, or the limit lowered) fails alone at the send point, and nothing
too big reaches the shard."""

import asyncio
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cortexd import config
from cortexd.control.errors import RequestError
from cortexd.control.hub import Hub
from cortexd.control.state import NodeState
from cortexd.lifecycle import State
from cortexd.serializers.envelope import InlineEncoder
from cortexd.store import TaskRow
from cortexd.store.sqlite import SQLiteStore
from tests.unit.test_hub_node_frames import ScriptedLink

LIMIT = 65_536  # the smallest max_frame_bytes the settings allow


async def small_hub(tmp_path: Path, **overrides: object) -> Hub:
    settings = config.load(None, {"insecure_loopback": True, "max_frame_bytes": LIMIT,
                                  **overrides}, environ={})
    store = SQLiteStore(str(tmp_path / "c.db"))
    await store.open()
    return Hub(settings, store, InlineEncoder(Ed25519PrivateKey.generate(), 60_000), "h")


def task(n: int, env_bytes: int) -> TaskRow:
    return TaskRow(task_id=f"t-{n:020d}", command="true", env={"BIG": "x" * env_bytes},
                   created_ms=1, updated_ms=1)


def test_a_submission_whose_envelope_could_not_be_sent_is_refused_naming_the_limit(
        tmp_path: Path) -> None:
    async def main() -> None:
        hub = await small_hub(tmp_path)
        ok, _ = await hub.tasks.submit(task(1, LIMIT - 400))  # fits, with its envelope
        assert ok.state is State.QUEUED
        with pytest.raises(RequestError) as e:
            await hub.tasks.submit(task(2, LIMIT - 200))  # the spec fits, the envelope not
        assert e.value.code == "INVALID_ARGUMENT"
        assert f"frame limit of {LIMIT} bytes (max_frame_bytes)" in str(e.value)
        assert await hub.state.store.get_task("t-00000000000000000002") is None
        outcomes = await hub.intake.submit_many([task(3, LIMIT)])  # SubmitMany too
        assert [getattr(o, "code", None) for o in outcomes] == ["INVALID_ARGUMENT"]
        await hub.state.store.close()

    asyncio.run(main())


def test_a_task_too_big_to_send_fails_alone_and_nothing_too_big_reaches_the_shard(
        tmp_path: Path) -> None:
    async def main() -> None:
        hub = await small_hub(tmp_path)
        st = hub.state
        epoch = await st.store.mint_epoch()
        st.nodes["n1"] = NodeState("n1", epoch, 0, {}, 4, attached=True)
        link = ScriptedLink([])
        st.links[0] = link  # type: ignore[assignment]
        poison, _ = await st.store.create_task(task(1, LIMIT))  # around the submission check
        fine, _ = await st.store.create_task(task(2, 10))
        st.queue[poison.task_id], st.queue[fine.task_id] = poison, fine
        await hub.placement.place()
        failed = await st.store.get_task(poison.task_id)
        assert failed is not None and failed.state is State.FAILED
        assert "never sent" in failed.reason and "max_frame_bytes" in failed.reason
        sent = [f for f in link.sent if f.HasField("task")]
        assert len(sent) == 1 and all(f.ByteSize() <= LIMIT for f in link.sent)
        assert poison.task_id not in st.nodes["n1"].running
        await st.store.close()

    asyncio.run(main())


def test_the_queue_is_bounded_by_bytes_as_well_as_tasks(tmp_path: Path) -> None:
    async def main() -> None:
        hub = await small_hub(tmp_path, max_queued_bytes=200_000)
        for n in range(3):
            await hub.tasks.submit(task(n, 60_000))
        assert hub.state.queue.bytes > 180_000
        with pytest.raises(RequestError) as e:
            await hub.tasks.submit(task(9, 60_000))
        assert e.value.code == "RESOURCE_EXHAUSTED" and "max_queued_bytes" in str(e.value)
        refused = await hub.intake.submit_many([task(10, 60_000)])
        assert [getattr(o, "code", None) for o in refused] == ["RESOURCE_EXHAUSTED"]
        before = hub.state.queue.bytes
        await hub.tasks.cancel("t-00000000000000000000", "")  # leaving frees its bytes
        assert hub.state.queue.bytes < before
        await hub.tasks.submit(task(11, 60_000))
        await hub.state.store.close()

    asyncio.run(main())


def test_watchers_are_bounded_per_client_so_one_cannot_lock_the_others_out() -> None:
    from cortexd.control.watchers import Watchers

    w = Watchers(limit=10, per_client=3)
    mine = [w.add("t", "greedy") for _ in range(3)]
    assert all(mine) and w.add("t", "greedy") is None
    why = w.refusal("greedy")
    assert why is not None and "max_watchers_per_client" in why
    others = [w.add("t", f"c{i}") for i in range(7)]
    assert all(others) and w.add("t", "late") is None  # the total holds too
    assert "max_watchers" in (w.refusal("late") or "")
    w.remove(mine[0])  # type: ignore[arg-type]
    assert w.add("t", "greedy") is not None


def test_cancel_says_what_it_did_when_the_output_is_still_arriving(tmp_path: Path) -> None:
    async def main() -> None:
        hub = await small_hub(tmp_path)
        st = hub.state
        epoch = await st.store.mint_epoch()
        st.nodes["n1"] = NodeState("n1", epoch, 0, {}, 4, attached=True)
        st.links[0] = ScriptedLink([])  # type: ignore[assignment]
        row, _ = await hub.tasks.submit(task(1, 10))
        await hub.placement.place()
        st.progress[row.task_id] = (1, 5000, 0)  # the node spooled 5,000 bytes, none here
        cancelled, outcome = await hub.tasks.cancel_explained(row.task_id, "")
        assert cancelled.cancel_requested
        assert "cancel sent to node n1" in outcome and "0 of 5000 spooled bytes" in outcome
        assert "result stands" in outcome
        st.nodes["n1"].attached = False  # (else a free node takes it at once: issue 9)
        queued, _ = await hub.tasks.submit(task(2, 10))
        assert (await hub.tasks.cancel_explained(queued.task_id, ""))[1] == \
            "cancelled while queued"
        await st.store.close()

    asyncio.run(main())
