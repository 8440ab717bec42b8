"""The store, for real, on both backends: conditional transitions, fencing, idempotency,
output, schema versions, group commit. PostgreSQL runs at 127.0.0.1:5432 (tests/pg.py)."""

import asyncio
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
import structlog

from cortexd.lifecycle import State
from cortexd.store import (
    NodeRow,
    SchemaError,
    StaleWrite,
    Store,
    StoreError,
    TaskRow,
    check_store,
    migrate_store,
    open_store,
)
from cortexd.store import migrations as migrations_mod
from cortexd.store.groupcommit import GroupCommit
from tests.pg import pg_schema

Body = Callable[[Store], Awaitable[None]]
LATEST = migrations_mod.latest("sqlite")  # the PostgreSQL migrations keep the same numbers


def run(url: str, body: Body) -> None:
    async def main() -> None:
        store = open_store(url)
        await store.open()
        try:
            await body(store)
        finally:
            await store.close()

    asyncio.run(main())


def task(task_id: str = "t-00000000000000000001", key: str = "") -> TaskRow:
    return TaskRow(task_id=task_id, command="echo hi", idempotency_key=key, created_ms=1,
                   updated_ms=1, env={"A": "1"}, selector={"zone": "z1"})


def test_epochs_are_strictly_increasing_and_durable(url: str) -> None:
    seen: list[int] = []

    async def body(store: Store) -> None:
        seen.extend([await store.mint_epoch() for _ in range(3)])

    run(url, body)
    run(url, body)  # reopened: keeps counting
    assert seen == sorted(set(seen)) and len(seen) == 6


def test_lifecycle_with_fencing(url: str) -> None:
    async def body(store: Store) -> None:
        t, created = await store.create_task(task())
        assert created
        row = await store.transition(t.task_id, attempt=0, node_epoch=0, to=State.ASSIGNED,
                                     new_attempt=True, node_id="n1", new_node_epoch=5,
                                     now_ms=2)
        assert (row.state, row.attempt, row.node_id, row.node_epoch) == (
            State.ASSIGNED, 1, "n1", 5)
        assert (row.env, row.selector) == ({"A": "1"}, {"zone": "z1"})
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
        with pytest.raises(StaleWrite, match="SUCCEEDED"):
            await store.transition(t.task_id, attempt=1, node_epoch=6, to=State.FAILED,
                                   exit_code=1, now_ms=6)
        with pytest.raises(StaleWrite, match="does not exist"):
            await store.transition("t-00000000000000000009", attempt=0, node_epoch=0,
                                   to=State.ASSIGNED, now_ms=6)
        history = await store.transitions(t.task_id)
        accepted = [(h.from_state, h.to_state) for h in history if h.accepted]
        assert accepted == [("QUEUED", "ASSIGNED"), ("ASSIGNED", "RUNNING"),
                            ("RUNNING", "SUCCEEDED")]
        refused = [h for h in history if not h.accepted]
        assert len(refused) == 3 and refused[0].reason.startswith("stale: task is ASSIGNED")
        assert [t.task_id for t in await store.tasks_in(frozenset({State.SUCCEEDED}))] == [
            t.task_id]
        assert await store.count_in(frozenset({State.SUCCEEDED, State.QUEUED})) == 1
        assert [r.task_id for r in await store.list_tasks(State.SUCCEEDED, "n1")] == [t.task_id]
        cancelled = await store.request_cancel(t.task_id)
        assert cancelled is not None and cancelled.cancel_requested

    run(url, body)


def test_requeue_clears_the_node_and_starts_a_new_attempt(url: str) -> None:
    async def body(store: Store) -> None:
        t, _ = await store.create_task(task())
        await store.transition(t.task_id, attempt=0, node_epoch=0, to=State.ASSIGNED,
                               new_attempt=True, node_id="n1", new_node_epoch=3, now_ms=2)
        await store.append_output(t.task_id, 1, 3, 0, b"partial")
        back = await store.transition(t.task_id, attempt=1, node_epoch=3, to=State.QUEUED,
                                      reason="rejected", now_ms=3)
        assert (back.state, back.node_id, back.node_epoch, back.attempt) == (
            State.QUEUED, "", 0, 1)
        again = await store.transition(t.task_id, attempt=1, node_epoch=0, to=State.ASSIGNED,
                                       new_attempt=True, node_id="n2", new_node_epoch=4,
                                       now_ms=4)
        assert (again.attempt, again.node_id, again.output_bytes) == (2, "n2", 0)

    run(url, body)


def test_idempotency_key_returns_the_same_task(url: str) -> None:
    async def body(store: Store) -> None:
        first, created = await store.create_task(task("t-00000000000000000001", key="k1"))
        again, created2 = await store.create_task(task("t-00000000000000000002", key="k1"))
        assert created and not created2
        assert again.task_id == first.task_id
        other, created3 = await store.create_task(task("t-00000000000000000003", key="k2"))
        assert created3 and other.task_id == "t-00000000000000000003"
        assert await store.get_task("t-00000000000000000002") is None

    run(url, body)


def test_output_is_gapless_and_deduplicated(url: str) -> None:
    async def body(store: Store) -> None:
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

    run(url, body)


def test_concurrent_writes_are_group_committed(url: str) -> None:
    """Writes awaited together share transactions; a stale one fails only itself."""
    async def body(store: Store) -> None:
        ids = [f"t-{i:020d}" for i in range(8)]
        for i in ids:
            await store.create_task(task(i))
        await asyncio.gather(*(store.transition(i, attempt=0, node_epoch=0, to=State.ASSIGNED,
                                                new_attempt=True, node_id="n1",
                                                new_node_epoch=2, now_ms=2) for i in ids))

        async def stream(task_id: str) -> list[tuple[int, int]]:
            return [await store.append_output(task_id, 1, 2, k * 4, b"%04d" % k)
                    for k in range(50)]

        writer = store.writer  # type: ignore[attr-defined]
        batches_before = writer.batches
        stale = store.append_output(ids[0], 1, 1, 0, b"stale")
        results = await asyncio.gather(*(stream(i) for i in ids), stale,
                                       return_exceptions=True)
        assert isinstance(results[-1], StaleWrite)
        for ends in results[:-1]:
            assert ends == [(k * 4, k * 4 + 4) for k in range(50)]
        assert writer.batches - batches_before < 8 * 50 / 4  # batched, not one per write
        for i in ids:
            assert await store.read_output(i, 1, 0, 1 << 20) == b"".join(
                b"%04d" % k for k in range(50))

    run(url, body)


def test_nodes_upsert_only_forward(url: str) -> None:
    async def body(store: Store) -> None:
        await store.node_attached(NodeRow("n1", 3, {"os": "linux"}, 4, "0.1", 0, True, 10))
        await store.node_attached(NodeRow("n1", 2, {"os": "old"}, 4, "0.1", 1, True, 11))
        assert not await store.node_detached("n1", 2, 12)  # not its current epoch
        (node,) = await store.list_nodes()
        assert (node.session_epoch, node.labels, node.shard, node.attached) == (
            3, {"os": "linux"}, 0, True)
        assert await store.node_detached("n1", 3, 13)
        (node,) = await store.list_nodes()
        assert not node.attached and node.last_seen_ms == 13

    run(url, body)


def _set_version(url: str, version: int) -> None:
    if url.startswith("sqlite"):
        db = sqlite3.connect(url.removeprefix("sqlite:///"))
        db.execute("INSERT INTO schema_migrations VALUES (?, 'future', 0)", (version,))
        db.commit()
        db.close()
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO schema_migrations VALUES (%s, 'future', 0)", (version,))


async def _noop(store: Store) -> None:
    pass


def test_newer_schema_is_refused(url: str) -> None:
    run(url, _noop)
    assert f"schema version {LATEST} (current)" in asyncio.run(check_store(url))
    _set_version(url, 99)
    with pytest.raises(SchemaError, match=rf"schema version 99, newer than .*version {LATEST}\)"):
        run(url, _noop)
    with pytest.raises(SchemaError, match="schema version 99"):
        asyncio.run(check_store(url))


def test_a_schema_behind_is_migrated_by_sqlite_and_refused_by_postgresql(
        url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    run(url, _noop)
    real = migrations_mod.load

    def with_next(kind: str) -> list[migrations_mod.Migration]:
        return [*real(kind),
                migrations_mod.Migration(LATEST + 1, "next", "CREATE TABLE next_t (x int);")]

    monkeypatch.setattr(migrations_mod, "load", with_next)
    if url.startswith("sqlite"):
        assert f"migrates it to {LATEST + 1}" in asyncio.run(check_store(url))
        run(url, _noop)  # embedded: migrates itself
    else:
        with pytest.raises(SchemaError, match=rf"version {LATEST}; this cortexd needs version "
                                              rf"{LATEST + 1} \(pending: {LATEST + 1:04d}_next\)"
                                              r": run `cortexctl db migrate --store postgresql://"):
            run(url, _noop)
        with pytest.raises(SchemaError, match="cortexctl db migrate"):
            asyncio.run(check_store(url))
        assert asyncio.run(migrate_store(url)) == (LATEST, LATEST + 1)
        run(url, _noop)
    assert asyncio.run(migrate_store(url)) == (LATEST + 1, LATEST + 1)
    assert f"schema version {LATEST + 1} (current)" in asyncio.run(check_store(url))


def test_check_store_on_empty_stores(url: str) -> None:
    line = asyncio.run(check_store(url))
    assert "first start" in line
    assert asyncio.run(migrate_store(url)) == (0, LATEST)
    assert f"schema version {LATEST} (current)" in asyncio.run(check_store(url))


def test_sqlite_store_from_before_the_ledger_is_adopted(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "c.db")
    db.executescript(migrations_mod.load("sqlite")[0].sql)
    db.execute("INSERT INTO meta VALUES ('schema_version', 1)")
    db.commit()
    db.close()
    url = f"sqlite:///{tmp_path / 'c.db'}"
    assert f"schema version 1, cortexd migrates it to {LATEST}" in asyncio.run(check_store(url))
    run(url, _noop)
    db = sqlite3.connect(tmp_path / "c.db")
    ledger = db.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
    assert ledger[0] == (1, "init") and len(ledger) == LATEST
    db.close()


def test_postgresql_epochs_are_unique_across_hubs() -> None:
    with pg_schema() as url:
        async def main() -> list[int]:
            a, b = open_store(url), open_store(url)
            await a.open()
            await b.open()
            try:
                got = await asyncio.gather(*(s.mint_epoch() for _ in range(50) for s in (a, b)))
            finally:
                await a.close()
                await b.close()
            return list(got)

        epochs = asyncio.run(main())
        assert sorted(epochs) == list(range(1, 101))


@pytest.mark.parametrize(("url", "says"), [
    ("postgresql://postgres@127.0.0.1:1/test", "nothing listens there"),
    ("postgresql://postgres@127.0.0.1:5432/cortex_no_such_db", "create the database"),
    ("postgresql://cortex_no_such_role@127.0.0.1:5432/test", "no such user"),
])
def test_check_store_says_what_is_wrong(url: str, says: str) -> None:
    with pg_schema():  # skips (outside CI) when there is no server at all
        pass
    with pytest.raises(StoreError, match=says):
        asyncio.run(check_store(url))


def test_store_url_must_name_a_backend() -> None:
    with pytest.raises(StoreError, match="expected sqlite"):
        open_store("mysql://x")


# -- the group commit writer alone -------------------------------------------------

def test_group_commit_bounds_batches_and_flushes_on_close() -> None:
    batches: list[list[int]] = []

    async def flush(ops: list[int]) -> list[int | Exception]:
        batches.append(list(ops))
        await asyncio.sleep(0.001)
        return [ValueError(op) if op == 13 else op * 2 for op in ops]

    async def main() -> list[object]:
        gc: GroupCommit[int, int] = GroupCommit(flush, max_batch=4, delay_s=0.002,
                                                max_pending=8)
        gc.start()
        got = await asyncio.gather(*(gc.submit(i) for i in range(20)), return_exceptions=True)
        late = asyncio.ensure_future(gc.submit(100))
        await asyncio.sleep(0)
        await gc.close()
        with pytest.raises(StoreError, match="closed"):
            await gc.submit(1)
        return [*got, await late]

    got = asyncio.run(main())
    assert got[:13] == [i * 2 for i in range(13)] and isinstance(got[13], ValueError)
    assert got[14:] == [i * 2 for i in range(14, 20)] + [200]
    assert all(len(b) <= 4 for b in batches) and sum(map(len, batches)) == 21
    assert len(batches) <= 7


def test_group_commit_retries_a_failed_batch_one_write_at_a_time() -> None:
    async def flush(ops: list[int]) -> list[int | Exception]:
        if 3 in ops and len(ops) > 1:
            raise RuntimeError("batch poisoned")
        if ops == [3]:
            raise RuntimeError("bad write")
        return list(ops)

    async def main() -> list[object]:
        gc: GroupCommit[int, int] = GroupCommit(flush, max_batch=16)
        gc.start()
        try:
            return list(await asyncio.gather(*(gc.submit(i) for i in range(6)),
                                             return_exceptions=True))
        finally:
            await gc.close()

    got = asyncio.run(main())
    assert [g for g in got if not isinstance(g, Exception)] == [0, 1, 2, 4, 5]
    assert isinstance(got[3], RuntimeError) and str(got[3]) == "bad write"


def test_task_limits_survive_the_store_and_a_transition(url: str) -> None:
    async def body(store: Store) -> None:
        row = task()
        row.timeout_s, row.idle_timeout_s = 30, 5
        row.memory_max_bytes, row.pids_max = 64 << 20, 50
        row.workspace = "w1"  # migration 0011
        await store.create_task(row)
        got = await store.get_task(row.task_id)
        assert got is not None and got.workspace == "w1"
        assert (got.timeout_s, got.idle_timeout_s, got.memory_max_bytes, got.pids_max) == (
            30, 5, 64 << 20, 50)
        moved = await store.transition(row.task_id, attempt=0, node_epoch=0, to=State.ASSIGNED,
                                       new_attempt=True, node_id="n1", new_node_epoch=5,
                                       now_ms=2)
        assert (moved.idle_timeout_s, moved.memory_max_bytes, moved.pids_max) == (
            5, 64 << 20, 50) and moved.workspace == "w1"
        plain = await store.create_task(task("t-00000000000000000009"))
        assert (plain[0].idle_timeout_s, plain[0].memory_max_bytes, plain[0].pids_max,
                plain[0].workspace) == (0, 0, 0, "")

    run(url, body)


# -- writes retried after an unknown commit outcome (issue 4) -----------------------

class LostAtCommit:
    """The after_commit hook: the first ``times`` committed batches fail as if the
    connection died at COMMIT (the writer cannot know they committed)."""

    def __init__(self, error: Callable[[], Exception], times: int = 1) -> None:
        self.error, self.left, self.fired = error, times, 0

    def __call__(self, ops: object) -> None:
        if self.left > 0:
            self.left -= 1
            self.fired += 1
            raise self.error()


def _pg_lost_connection() -> Exception:
    import psycopg

    return psycopg.OperationalError("consuming input failed: server closed the connection "
                                    "unexpectedly (test hook, after COMMIT)")


async def _assigned(store: Store, ids: list[str], epoch: int = 7) -> None:
    for i in ids:
        await store.create_task(task(i))
    await asyncio.gather(*(store.transition(i, attempt=0, node_epoch=0, to=State.ASSIGNED,
                                            new_attempt=True, node_id="n1",
                                            new_node_epoch=epoch, now_ms=2) for i in ids))


def _retry_after_commit_body(error: Callable[[], Exception]) -> Body:
    async def body(store: Store) -> None:
        ids = [f"t-{i:020d}" for i in range(6)]
        await _assigned(store, ids)
        hook = LostAtCommit(error)
        store.after_commit = hook  # type: ignore[attr-defined]
        # One batch: four transitions, two appends and one genuinely stale transition.
        got = await asyncio.gather(
            *(store.transition(i, attempt=1, node_epoch=7, to=State.RUNNING, now_ms=3)
              for i in ids[:4]),
            store.append_output(ids[4], 1, 7, 0, b"hello "),
            store.append_output(ids[5], 1, 7, 0, b"world"),
            store.transition(ids[4], attempt=1, node_epoch=6, to=State.RUNNING, now_ms=3),
            return_exceptions=True)
        assert hook.fired == 1
        for row in got[:4]:  # committed on the first try: accepted, not "stale"
            assert isinstance(row, TaskRow) and row.state is State.RUNNING, row
        assert got[4:6] == [(0, 6), (0, 5)]  # what the committed append returned
        assert isinstance(got[6], StaleWrite)  # a refusal stays a refusal
        assert store.replays >= 5  # type: ignore[attr-defined]
        history = await store.transitions()
        running = [h for h in history if h.to_state == "RUNNING"]
        assert sorted(h.task_id for h in running if h.accepted) == ids[:4]  # once each
        refused = [h for h in running if not h.accepted]
        assert len(refused) == 1 and refused[0].task_id == ids[4]  # recorded once
        assert all(len(h.write_id) == 32 for h in history)
        assert {h.node_id for h in history if h.accepted} == {"n1"}
        assert await store.read_output(ids[4], 1, 0, 100) == b"hello "
        assert await store.read_output(ids[5], 1, 0, 100) == b"world"
        for i, want in ((ids[4], 6), (ids[5], 5)):
            row = await store.get_task(i)
            assert row is not None and row.output_bytes == want
        # The next append continues at the durable end: nothing was written twice.
        assert await store.append_output(ids[4], 1, 7, 6, b"again") == (6, 11)

    return body


def test_a_batch_whose_commit_failed_is_retried_without_stale_or_double_writes(
        url: str) -> None:
    """The group commit's one-at-a-time retry (a non-transient error after COMMIT)."""
    run(url, _retry_after_commit_body(lambda: RuntimeError("lost at commit (test hook)")))


def test_postgresql_retries_a_batch_lost_at_commit_and_logs_one_outage() -> None:
    """A transient error after COMMIT: the PostgreSQL store retries the whole batch."""
    with pg_schema() as url:
        async def body(store: Store) -> None:
            await _retry_after_commit_body(_pg_lost_connection)(store)
            outages = store.outages  # type: ignore[attr-defined]
            assert (outages.outages, outages.reachable) == (1, True)

        run(url, body)


def test_a_retried_transition_that_committed_a_new_attempt_returns_it(url: str) -> None:
    async def body(store: Store) -> None:
        await store.create_task(task())
        store.after_commit = LostAtCommit(  # type: ignore[attr-defined]
            lambda: RuntimeError("lost at commit"))
        row = await store.transition(task().task_id, attempt=0, node_epoch=0,
                                     to=State.ASSIGNED, new_attempt=True, node_id="n1",
                                     new_node_epoch=3, now_ms=2)
        assert (row.state, row.attempt, row.node_epoch) == (State.ASSIGNED, 1, 3)
        (h,) = await store.transitions()
        assert (h.accepted, h.attempt, h.node_epoch, h.node_id) == (True, 1, 3, "n1")

    run(url, body)


def test_postgresql_writes_survive_killed_connections() -> None:
    """Store connections killed by pg_terminate_backend (a real lost connection, at
    any moment, COMMIT included) while writes stream: every write ends once."""
    import psycopg

    with pg_schema() as base:
        app = f"cortex_test_{uuid.uuid4().hex[:8]}"
        url = f"{base}&application_name={app}"

        async def body(store: Store) -> None:
            ids = [f"t-{i:020d}" for i in range(12)]
            await _assigned(store, ids)
            done = asyncio.Event()
            killed = 0

            async def killer() -> None:
                nonlocal killed
                async with await psycopg.AsyncConnection.connect(base, autocommit=True) as c:
                    for _ in range(8):  # a kill round every 0.2 s while the writes run
                        await asyncio.sleep(0.2)
                        if done.is_set():
                            return
                        cur = await c.execute(
                            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM "
                            "pg_stat_activity WHERE application_name = %s", (app,))
                        row = await cur.fetchone()
                        killed += int(row[0]) if row else 0

            async def stream(task_id: str) -> list[tuple[int, int]]:
                ends = []
                for k in range(40):
                    ends.append(await store.append_output(task_id, 1, 7, k * 4, b"%04d" % k))
                    await asyncio.sleep(0.01)  # a node's pace: the writes span the kills
                await store.transition(task_id, attempt=1, node_epoch=7, to=State.RUNNING,
                                       now_ms=3)
                await store.transition(task_id, attempt=1, node_epoch=7, to=State.SUCCEEDED,
                                       exit_code=0, now_ms=4)
                return ends

            kill = asyncio.create_task(killer())
            try:
                results = await asyncio.gather(*(stream(i) for i in ids))
            finally:
                done.set()
                await kill
            assert killed > 0
            for ends in results:
                assert ends == [(k * 4, k * 4 + 4) for k in range(40)]
            for i in ids:
                assert await store.read_output(i, 1, 0, 1 << 20) == b"".join(
                    b"%04d" % k for k in range(40))
            history = await store.transitions()
            assert not [h for h in history if not h.accepted]
            assert len(history) == 3 * len(ids)
            outages = store.outages  # type: ignore[attr-defined]
            print(f"killed {killed} connections; {outages.outages} outages, "
                  f"{outages.retries} retries, {store.replays} replayed writes")  # type: ignore[attr-defined]

        run(url, body)


def test_backoff_is_capped_and_jittered() -> None:
    from cortexd.store.outage import Backoff

    b = Backoff(initial_s=0.05, max_s=2.0)
    assert [b.delay_s(n, lambda: 1.0) for n in (1, 2, 3)] == [0.05, 0.1, 0.2]
    assert b.delay_s(50, lambda: 1.0) == 2.0 and b.delay_s(50, lambda: 0.0) == 1.0
    assert b.delay_s(10_000) <= 2.0


def test_outages_retry_transient_errors_and_give_up_only_when_closing() -> None:
    from cortexd.store.outage import Backoff, Outages, StoreUnavailable

    async def main() -> None:
        o = Outages("test", lambda e: isinstance(e, ConnectionError), Backoff(0.001, 0.004))
        calls = 0

        async def flaky() -> str:
            nonlocal calls
            calls += 1
            if calls < 5:
                raise ConnectionError("down")
            return "ok"

        with structlog.testing.capture_logs() as logged:
            assert await o.call("read", flaky) == "ok"
        assert (o.outages, o.retries, o.reachable) == (1, 4, True)
        # One line when it went away, one when it came back: not one per retry.
        assert [e["event"] for e in logged] == ["store_unavailable", "store_recovered"]
        assert logged[1]["retries"] == 4 and logged[1]["duration_s"] >= 0

        async def bad() -> None:
            raise ValueError("not transient")

        with pytest.raises(ValueError):
            await o.call("read", bad)

        async def down() -> None:
            raise ConnectionError("still down")

        o.give_up_after(0.05)
        with pytest.raises(StoreUnavailable, match="closing"):
            await o.call("write", down)
        assert o.outages == 2 and not o.reachable

    asyncio.run(main())


def test_group_commit_queue_stays_bounded_while_the_store_is_down() -> None:
    """A flush that does not return (a store riding out an outage) holds at most
    max_pending writes; further writers wait to enqueue, and all complete after."""
    back = asyncio.Event()

    async def flush(ops: list[int]) -> list[int | Exception]:
        await back.wait()
        return list(ops)

    async def main() -> None:
        gc: GroupCommit[int, int] = GroupCommit(flush, max_batch=4, max_pending=8)
        gc.start()
        writers = [asyncio.ensure_future(gc.submit(i)) for i in range(30)]
        await asyncio.sleep(0.05)
        assert len(gc._queue) <= 8 and not any(w.done() for w in writers)
        back.set()
        assert await asyncio.gather(*writers) == list(range(30))
        await gc.close()

    asyncio.run(main())


def test_placement_only_onto_the_nodes_current_session(url: str) -> None:
    """QUEUED -> ASSIGNED with a node epoch the node has moved past is refused, and
    recorded: a hub that has not heard of the node's newer session cannot bind a task
    to the dead one."""
    async def body(store: Store) -> None:
        old, new = await store.mint_epoch(), await store.mint_epoch()
        for epoch in (old, new):
            await store.node_attached(NodeRow("n1", epoch, {}, 4, "v", 0, True, 1))
        task, _ = await store.create_task(TaskRow(task_id="t-00000000000000000042",
                                                  command="true"))
        with pytest.raises(StaleWrite):
            await store.transition(task.task_id, attempt=0, node_epoch=0, to=State.ASSIGNED,
                                   new_attempt=True, node_id="n1", new_node_epoch=old,
                                   now_ms=2)
        fresh = await store.get_task(task.task_id)
        assert fresh is not None and fresh.state is State.QUEUED
        row = await store.transition(task.task_id, attempt=0, node_epoch=0, to=State.ASSIGNED,
                                     new_attempt=True, node_id="n1", new_node_epoch=new,
                                     now_ms=3)
        assert (row.state, row.node_epoch) == (State.ASSIGNED, new)
        refused = [t for t in await store.transitions(task.task_id) if not t.accepted]
        assert [(t.to_state, t.node_epoch) for t in refused] == [("ASSIGNED", old)]
    run(url, body)


def test_a_finished_tasks_output_is_final_and_a_late_append_is_recorded(url: str) -> None:
    async def body(store: Store) -> None:
        t, _ = await store.create_task(task())
        await store.transition(t.task_id, attempt=0, node_epoch=0, to=State.ASSIGNED,
                               new_attempt=True, node_id="n1", new_node_epoch=5, now_ms=2)
        assert await store.append_output(t.task_id, 1, 5, 0, b"abc") == (0, 3)
        await store.transition(t.task_id, attempt=1, node_epoch=5, to=State.SUCCEEDED,
                               exit_code=0, now_ms=3)
        with pytest.raises(StaleWrite):  # the same session, after the end
            await store.append_output(t.task_id, 1, 5, 3, b"def")
        with pytest.raises(StaleWrite):  # a later Finished cannot change the state either
            await store.transition(t.task_id, attempt=1, node_epoch=5, to=State.FAILED,
                                   exit_code=1, now_ms=4)
        done = await store.get_task(t.task_id)
        assert done is not None and (done.state, done.output_bytes) == (State.SUCCEEDED, 3)
        assert await store.read_output(t.task_id, 1, 0, 100) == b"abc"
        refused = [h for h in await store.transitions(t.task_id) if not h.accepted]
        assert [h.reason for h in refused][0] == "output after the end refused: 3 bytes at " \
            "offset 3"
        assert len(refused) == 2

    run(url, body)


def test_every_allowed_transition_is_taken_and_every_other_refused(url: str) -> None:
    """The transition rule of both backends against cortexd/lifecycle.py's table: each
    (from, to) pair is driven through the store, allowed ones accepted, others refused."""
    from cortexd.lifecycle import ALLOWED

    async def reach(store: Store, n: int, state: State) -> TaskRow:
        t, _ = await store.create_task(task(f"t-{n:020d}"))
        if state is State.QUEUED:
            return t
        row = await store.transition(t.task_id, attempt=0, node_epoch=0, to=State.ASSIGNED,
                                     new_attempt=True, node_id="n1", new_node_epoch=5,
                                     now_ms=2)
        if state is State.ASSIGNED:
            return row
        if state is not State.RUNNING:  # a terminal state, from RUNNING
            row = await store.transition(t.task_id, attempt=1, node_epoch=5,
                                         to=State.RUNNING, now_ms=3)
        return await store.transition(t.task_id, attempt=1, node_epoch=5, to=state,
                                      now_ms=4)

    async def body(store: Store) -> None:
        n = 0
        for src in State:
            for dst in State:
                n += 1
                row = await reach(store, n, src)
                assert row.state is src
                kw: dict[str, object] = {}
                if src is State.QUEUED and dst is State.ASSIGNED:
                    kw = {"new_attempt": True, "node_id": "n1", "new_node_epoch": 5}
                try:
                    after = await store.transition(row.task_id, attempt=row.attempt,
                                                   node_epoch=row.node_epoch, to=dst,
                                                   now_ms=9, **kw)  # type: ignore[arg-type]
                except StaleWrite:
                    assert dst not in ALLOWED[src], f"{src} -> {dst} refused"
                else:
                    assert dst in ALLOWED[src], f"{src} -> {dst} accepted"
                    assert after.state is dst

    run(url, body)


def test_list_tasks_pages_newest_first_after_a_cursor(url: str) -> None:
    async def body(store: Store) -> None:
        for i, created in enumerate([5, 7, 7, 7, 9]):  # ties in created_ms: task_id orders
            await store.create_task(replace(task(f"t-{i:020d}"), created_ms=created))
        everything = [r.task_id for r in await store.list_tasks(limit=10)]
        assert everything == ["t-00000000000000000004", "t-00000000000000000001",
                              "t-00000000000000000002", "t-00000000000000000003",
                              "t-00000000000000000000"]
        walked: list[str] = []
        before = None
        while True:
            rows = await store.list_tasks(limit=2, before=before)
            if not rows:
                break
            walked += [r.task_id for r in rows]
            before = (rows[-1].created_ms, rows[-1].task_id)
        assert walked == everything

    run(url, body)
