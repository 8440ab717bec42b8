"""The SQLite store, for real: conditional transitions, fencing, idempotency, output."""

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from cortexd.lifecycle import State
from cortexd.store import NodeRow, StaleWrite, StoreError, TaskRow, open_store
from cortexd.store.sqlite import SQLiteStore


def run(tmp_path: Path, body: Callable[[SQLiteStore], Awaitable[None]]) -> None:
    async def main() -> None:
        store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
        assert isinstance(store, SQLiteStore)
        await store.open()
        try:
            await body(store)
        finally:
            await store.close()

    asyncio.run(main())


def task(task_id: str = "t-00000000000000000001", key: str = "") -> TaskRow:
    return TaskRow(task_id=task_id, command="echo hi", idempotency_key=key, created_ms=1,
                   updated_ms=1)


def test_epochs_are_strictly_increasing_and_durable(tmp_path: Path) -> None:
    seen: list[int] = []

    async def body(store: SQLiteStore) -> None:
        seen.extend([await store.mint_epoch() for _ in range(3)])

    run(tmp_path, body)
    run(tmp_path, body)  # reopened: keeps counting
    assert seen == sorted(set(seen)) and len(seen) == 6


def test_lifecycle_with_fencing(tmp_path: Path) -> None:
    async def body(store: SQLiteStore) -> None:
        t, created = await store.create_task(task())
        assert created
        row = await store.transition(t.task_id, attempt=0, node_epoch=0, to=State.ASSIGNED,
                                     new_attempt=True, node_id="n1", new_node_epoch=5,
                                     now_ms=2)
        assert (row.state, row.attempt, row.node_id, row.node_epoch) == (
            State.ASSIGNED, 1, "n1", 5)
        # A writer from another session epoch is refused, and the refusal is recorded.
        with pytest.raises(StaleWrite):
            await store.transition(t.task_id, attempt=1, node_epoch=4, to=State.RUNNING,
                                   now_ms=3)
        # The node re-attached with epoch 6: the task moves to it, never back.
        assert await store.rebind_epoch(t.task_id, 1, "n1", 6)
        assert not await store.rebind_epoch(t.task_id, 1, "n1", 5)
        with pytest.raises(StaleWrite):
            await store.transition(t.task_id, attempt=1, node_epoch=5, to=State.RUNNING,
                                   now_ms=3)
        await store.transition(t.task_id, attempt=1, node_epoch=6, to=State.RUNNING, now_ms=4)
        done = await store.transition(t.task_id, attempt=1, node_epoch=6, to=State.SUCCEEDED,
                                      exit_code=0, now_ms=5)
        assert (done.state, done.exit_code) == (State.SUCCEEDED, 0)
        # A late duplicate result cannot move a terminal task.
        with pytest.raises(StaleWrite):
            await store.transition(t.task_id, attempt=1, node_epoch=6, to=State.FAILED,
                                   exit_code=1, now_ms=6)
        history = await store.transitions(t.task_id)
        accepted = [(h.from_state, h.to_state) for h in history if h.accepted]
        assert accepted == [("QUEUED", "ASSIGNED"), ("ASSIGNED", "RUNNING"),
                            ("RUNNING", "SUCCEEDED")]
        assert sum(not h.accepted for h in history) == 3

    run(tmp_path, body)


def test_idempotency_key_returns_the_same_task(tmp_path: Path) -> None:
    async def body(store: SQLiteStore) -> None:
        first, created = await store.create_task(task("t-00000000000000000001", key="k1"))
        again, created2 = await store.create_task(task("t-00000000000000000002", key="k1"))
        assert created and not created2
        assert again.task_id == first.task_id
        other, created3 = await store.create_task(task("t-00000000000000000003", key="k2"))
        assert created3 and other.task_id == "t-00000000000000000003"

    run(tmp_path, body)


def test_output_is_gapless_and_deduplicated(tmp_path: Path) -> None:
    async def body(store: SQLiteStore) -> None:
        t, _ = await store.create_task(task())
        await store.transition(t.task_id, attempt=0, node_epoch=0, to=State.ASSIGNED,
                               new_attempt=True, node_id="n1", new_node_epoch=9, now_ms=2)
        assert await store.append_output(t.task_id, 1, 9, 0, b"hello ") == (0, 6)
        assert await store.append_output(t.task_id, 1, 9, 3, b"lo world") == (6, 11)  # overlap
        assert await store.append_output(t.task_id, 1, 9, 0, b"hello") == (11, 11)  # replay
        assert await store.append_output(t.task_id, 1, 9, 20, b"gap") == (11, 11)  # refused
        with pytest.raises(StaleWrite):
            await store.append_output(t.task_id, 1, 8, 11, b"!")  # stale epoch
        assert await store.read_output(t.task_id, 1, 0, 1 << 20) == b"hello world"
        assert await store.read_output(t.task_id, 1, 4, 3) == b"o w"
        row = await store.get_task(t.task_id)
        assert row is not None and row.output_bytes == 11

    run(tmp_path, body)


def test_nodes_upsert_only_forward(tmp_path: Path) -> None:
    async def body(store: SQLiteStore) -> None:
        await store.node_attached(NodeRow("n1", 3, {"os": "linux"}, 4, "0.1", 0, True, 10))
        await store.node_attached(NodeRow("n1", 2, {"os": "old"}, 4, "0.1", 1, True, 11))
        assert not await store.node_detached("n1", 2, 12)  # not its current epoch
        (node,) = await store.list_nodes()
        assert (node.session_epoch, node.labels, node.shard, node.attached) == (
            3, {"os": "linux"}, 0, True)
        assert await store.node_detached("n1", 3, 13)

    run(tmp_path, body)


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    async def body(store: SQLiteStore) -> None:
        pass

    run(tmp_path, body)
    db = sqlite3.connect(tmp_path / "c.db")
    db.execute("UPDATE meta SET value=99 WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="schema version 99"):
        run(tmp_path, body)
