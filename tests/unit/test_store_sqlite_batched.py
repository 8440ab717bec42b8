"""SQLite's hot path through the group commit: inserts and reads share batches with writes."""

import asyncio
from pathlib import Path

import pytest

from cortexd.lifecycle import State
from cortexd.store import StoreError, TaskRow
from cortexd.store.sqlite import SQLiteStore


def task(i: int, key: str = "", command: str = "true") -> TaskRow:
    return TaskRow(task_id=f"t-{i:020d}", command=command, idempotency_key=key, created_ms=1,
                   updated_ms=1, env={"A": "1"})


def test_inserts_reads_and_transitions_share_a_batch_in_order(tmp_path: Path) -> None:
    async def main() -> None:
        store = SQLiteStore(str(tmp_path / "c.db"))
        await store.open()
        try:
            before = store.writer.batches
            ids = [task(i).task_id for i in range(50)]
            created = await asyncio.gather(*(store.create_task(task(i)) for i in range(50)))
            assert all(c for _, c in created)
            assert store.writer.batches - before < 10  # not one transaction per insert
            # A read queued after a write sees it; the returned row is the stored one.
            moved, seen = await asyncio.gather(
                store.transition(ids[0], attempt=0, node_epoch=0, to=State.ASSIGNED,
                                 new_attempt=True, node_id="n1", new_node_epoch=3, now_ms=5),
                store.get_task(ids[0]))
            assert seen == moved
            assert (moved.state, moved.attempt, moved.node_id, moved.node_epoch,
                    moved.updated_ms, moved.env) == (State.ASSIGNED, 1, "n1", 3, 5, {"A": "1"})
            assert await store.get_task("t-99999999999999999999") is None
            # Idempotency keys still find the first task, within one batch too.
            a, b = await asyncio.gather(store.create_task(task(100, key="k")),
                                        store.create_task(task(101, key="k")))
            assert a == (task(100, key="k"), True) and b[1] is False
            assert b[0].task_id == task(100).task_id
        finally:
            await store.close()

    asyncio.run(main())


def test_an_insert_retried_after_its_commit_returns_the_task(tmp_path: Path) -> None:
    async def main() -> None:
        store = SQLiteStore(str(tmp_path / "c.db"))
        await store.open()
        fired = []

        def lost_at_commit(ops: object) -> None:
            if not fired:
                fired.append(1)
                raise RuntimeError("lost at commit (test hook)")

        try:
            store.after_commit = lost_at_commit
            row, created = await store.create_task(task(1))
            assert created and fired and row.task_id == task(1).task_id
            assert store.replays == 1
            with pytest.raises(StoreError):  # a different task under a used id
                await store.create_task(task(1, command="false"))
        finally:
            await store.close()

    asyncio.run(main())
