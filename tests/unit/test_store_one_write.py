"""One write where there were two (issue 9), on both backends: ``create_task(place=…)``
inserts a task already placed (QUEUED -> ASSIGNED in the insert's commit, fenced on the
node's session), and ``end_attempt`` takes a node's Finished — its folded output, then
its end — in one commit, the end tried only when it needs no decision by the hub. Every
refusal is as conditional, and as recorded, as with the separate writes."""

import asyncio

from cortexd.history import check_store
from cortexd.lifecycle import State
from cortexd.store import NodeRow, StaleWrite, Store, TaskRow
from tests.unit.test_store import LostAtCommit, run, task

T = "t-00000000000000000001"


async def assigned(store: Store, epoch: int = 7) -> TaskRow:
    await store.create_task(task(T))
    return await store.transition(T, attempt=0, node_epoch=0, to=State.ASSIGNED,
                                  new_attempt=True, node_id="n1", new_node_epoch=epoch,
                                  now_ms=2)


def end(store: Store, data: bytes, output_end: int, *, epoch: int = 7, attempt: int = 1,
        to: State = State.SUCCEEDED, exit_code: int = 0):  # type: ignore[no-untyped-def]
    return store.end_attempt(T, attempt=attempt, node_epoch=epoch, to=to,
                             exit_code=exit_code, reason="", output_end=output_end,
                             output=data, now_ms=3)


def test_folded_output_and_end_are_one_commit(url: str) -> None:
    async def body(store: Store) -> None:
        await assigned(store)
        batches = store.writer.batches  # type: ignore[attr-defined]
        done = await end(store, b"abc", 3)
        assert store.writer.batches == batches + 1  # type: ignore[attr-defined]
        assert done.appended == (0, 3)
        assert isinstance(done.ended, TaskRow)
        assert (done.ended.state, done.ended.exit_code, done.ended.output_bytes) == (
            State.SUCCEEDED, 0, 3)
        row = await store.get_task(T)
        assert row is not None and (row.state, row.output_bytes) == (State.SUCCEEDED, 3)
        assert await store.read_output(T, 1, 0, 100) == b"abc"
        history = await store.transitions(T)
        assert [(h.from_state, h.to_state, h.accepted) for h in history] == [
            ("QUEUED", "ASSIGNED", True), ("ASSIGNED", "SUCCEEDED", True)]

    run(url, body)


def test_an_end_without_output_after_the_output_was_streamed(url: str) -> None:
    async def body(store: Store) -> None:
        await assigned(store)
        assert await store.append_output(T, 1, 7, 0, b"hello") == (0, 5)
        done = await end(store, b"", 5, to=State.FAILED, exit_code=2)
        assert done.appended is None
        assert isinstance(done.ended, TaskRow) and done.ended.state is State.FAILED

    run(url, body)


def test_an_end_that_needs_a_decision_is_not_tried(url: str) -> None:
    """More output claimed than held, or a cancel requested: the append stands, the task
    is not ended and nothing about an end is recorded (the hub decides, finishes.py)."""
    async def body(store: Store) -> None:
        await assigned(store)
        done = await end(store, b"cd", 4)  # bytes [2, 4): a gap, the hub holds 0
        assert done.appended == (0, 0) and done.ended is None
        assert await store.append_output(T, 1, 7, 0, b"ab") == (0, 2)
        done = await end(store, b"", 4)  # the hub holds 2 of 4
        assert done.appended is None and done.ended is None
        await store.request_cancel(T)
        done = await end(store, b"cd", 4)  # complete now, but a cancel was asked
        assert done.appended == (2, 4) and done.ended is None
        row = await store.get_task(T)
        assert row is not None and (row.state, row.output_bytes) == (State.ASSIGNED, 4)
        assert [h.to_state for h in await store.transitions(T)] == ["ASSIGNED"]

    run(url, body)


def test_a_stale_end_is_refused_and_recorded_and_a_late_one_changes_nothing(
        url: str) -> None:
    async def body(store: Store) -> None:
        await assigned(store)
        stale = await end(store, b"x", 1, epoch=6)  # a superseded session
        assert isinstance(stale.appended, StaleWrite) and isinstance(stale.ended, StaleWrite)
        assert (await end(store, b"ok", 2)).ended is not None
        late = await end(store, b"forged", 8, to=State.FAILED, exit_code=3)
        assert isinstance(late.appended, StaleWrite) and isinstance(late.ended, StaleWrite)
        row = await store.get_task(T)
        assert row is not None and (row.state, row.output_bytes, row.exit_code) == (
            State.SUCCEEDED, 2, 0)
        assert await store.read_output(T, 1, 0, 100) == b"ok"
        refused = [h for h in await store.transitions(T) if not h.accepted]
        assert [h.to_state for h in refused] == ["SUCCEEDED", "SUCCEEDED", "FAILED"]
        assert "output after the end refused" in refused[1].reason

    run(url, body)


def test_an_end_retried_after_its_commit_was_lost_returns_what_committed(url: str) -> None:
    async def body(store: Store) -> None:
        await assigned(store)
        hook = LostAtCommit(lambda: RuntimeError("lost at commit (test hook)"))
        store.after_commit = hook  # type: ignore[attr-defined]
        done, other = await asyncio.gather(end(store, b"abc", 3),
                                           store.transition(T, attempt=1, node_epoch=5,
                                                            to=State.RUNNING, now_ms=3),
                                           return_exceptions=True)
        assert hook.fired == 1
        assert not isinstance(done, BaseException)
        assert done.appended == (0, 3)
        assert isinstance(done.ended, TaskRow) and done.ended.state is State.SUCCEEDED
        assert isinstance(other, StaleWrite)
        history = await store.transitions(T)
        assert [(h.to_state, h.accepted) for h in history] == [
            ("ASSIGNED", True), ("SUCCEEDED", True), ("RUNNING", False)]  # once each
        assert await store.read_output(T, 1, 0, 100) == b"abc"

    run(url, body)


def test_a_task_inserted_placed_is_assigned_in_one_write(url: str) -> None:
    async def body(store: Store) -> None:
        await store.node_attached(NodeRow("n1", 7, {}, 4, "", 0, True, 1))
        row, created = await store.create_task(task(T), place=("n1", 7))
        assert created
        assert (row.state, row.attempt, row.node_id, row.node_epoch) == (
            State.ASSIGNED, 1, "n1", 7)
        stored = await store.get_task(T)
        assert stored is not None and (stored.state, stored.attempt, stored.node_id) == (
            State.ASSIGNED, 1, "n1")
        assert [(h.from_state, h.to_state, h.accepted, h.attempt, h.node_id)
                for h in await store.transitions(T)] == [
            ("QUEUED", "ASSIGNED", True, 1, "n1")]
        assert (await end(store, b"ok", 2)).ended is not None  # its attempt runs on
        again, created = await store.create_task(task("t-00000000000000000002", "k"),
                                                 place=("n1", 7))
        dup, created_dup = await store.create_task(task("t-00000000000000000003", "k"),
                                                   place=("n1", 7))
        assert created and not created_dup and dup.task_id == again.task_id
        assert [h.task_id for h in await store.transitions()].count(again.task_id) == 1
        report = await check_store(store)
        assert report.ok, report.summary()

    run(url, body)


def test_a_placement_at_insert_onto_a_moved_session_leaves_it_queued(url: str) -> None:
    async def body(store: Store) -> None:
        await store.node_attached(NodeRow("n1", 8, {}, 4, "", 0, True, 1))
        row, created = await store.create_task(task(T), place=("n1", 7))
        assert created and (row.state, row.attempt, row.node_id) == (State.QUEUED, 0, "")
        stored = await store.get_task(T)
        assert stored is not None and stored.state is State.QUEUED
        (h,) = await store.transitions(T)
        assert (h.to_state, h.accepted, h.node_id) == ("ASSIGNED", False, "n1")
        assert "session 8, not 7" in h.reason

    run(url, body)
