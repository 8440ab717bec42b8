"""The history checker on real stores (SQLite and PostgreSQL): a good history made
through the store passes; each kind of violation, written into ``transitions`` behind
the store's back, is caught."""

import asyncio
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cortexd.history import HistoryReport, check_url
from cortexd.lifecycle import State
from cortexd.store import StaleWrite, Store, TaskRow, open_store


def tid(n: int) -> str:
    return f"t-{n:020d}"


async def _good_history(store: Store) -> None:
    """Five tasks: one succeeds, one is refused a stale write and fails, one is requeued
    and succeeds on attempt 2, one is cancelled while queued, one is still running. A
    write lost at commit and retried is in there too."""
    for n in range(1, 6):
        await store.create_task(TaskRow(task_id=tid(n), command="true", created_ms=n,
                                        updated_ms=n))

    async def assign(n: int, attempt: int, node: str, epoch: int) -> None:
        await store.transition(tid(n), attempt=attempt, node_epoch=0, to=State.ASSIGNED,
                               new_attempt=True, node_id=node, new_node_epoch=epoch, now_ms=2)

    async def move(n: int, attempt: int, epoch: int, to: State) -> None:
        await store.transition(tid(n), attempt=attempt, node_epoch=epoch, to=to, now_ms=3)

    await assign(1, 0, "n1", 5)
    fired = []

    def lost(ops: object) -> None:
        if not fired:
            fired.append(1)
            raise RuntimeError("lost at commit")

    store.after_commit = lost  # type: ignore[attr-defined]
    await move(1, 1, 5, State.RUNNING)  # committed, failed, retried: found, not stale
    store.after_commit = None  # type: ignore[attr-defined]
    await move(1, 1, 5, State.SUCCEEDED)
    await assign(2, 0, "n1", 5)
    with pytest.raises(StaleWrite):
        await move(2, 1, 4, State.RUNNING)  # an old session: refused, recorded
    await move(2, 1, 5, State.FAILED)
    await assign(3, 0, "n2", 6)
    await move(3, 1, 6, State.QUEUED)  # rejected by the node: requeued
    await assign(3, 1, "n1", 7)
    await move(3, 2, 7, State.RUNNING)
    await move(3, 2, 7, State.SUCCEEDED)
    await move(4, 0, 0, State.CANCELLED)
    await assign(5, 0, "n2", 8)
    await move(5, 1, 8, State.RUNNING)


async def _seed(url: str) -> None:
    """Write the good history into the store at ``url``."""
    store = open_store(url)
    await store.open()
    try:
        await _good_history(store)
    finally:
        await store.close()


def run_check(url: str, *, inject: list[tuple[object, ...]] = ()) -> HistoryReport:  # type: ignore[assignment]
    async def main() -> HistoryReport:
        await _seed(url)
        _inject(url, inject)
        return await check_url(url)

    return asyncio.run(main())


def _inject(url: str, rows: list[tuple[object, ...]]) -> None:
    """Write transitions rows (task, attempt, from, to, epoch, node, write id) directly,
    as accepted, the way a broken writer would have."""
    if not rows:
        return
    cols = ("task_id, attempt, from_state, to_state, node_epoch, node_id, write_id, "
            "accepted, at_ms, reason")
    if url.startswith("sqlite"):
        db = sqlite3.connect(url.removeprefix("sqlite:///"))
        db.executemany(f"INSERT INTO transitions ({cols}) VALUES (?,?,?,?,?,?,?,1,9,'')", rows)
        db.commit()
        db.close()
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            for r in rows:
                conn.execute(f"INSERT INTO transitions ({cols}) VALUES "
                             "(%s,%s,%s,%s,%s,%s,%s::uuid,true,9,'')",
                             (*r[:6], uuid.UUID(str(r[6]))))


def test_a_good_history_passes(url: str) -> None:
    report = run_check(url)
    assert report.ok, report.violations
    assert (report.tasks, report.ended, report.active) == (5, 4, [tid(5)])
    assert report.refused == 1 and report.accepted == 13
    assert report.by_state == {"SUCCEEDED": 2, "FAILED": 1, "CANCELLED": 1, "RUNNING": 1}


def _write_id_of(url: str, task_id: str, to_state: str) -> str:
    async def main() -> str:
        store = open_store(url)
        await store.open()
        try:
            rows = await store.transitions(task_id)
        finally:
            await store.close()
        return next(r.write_id for r in rows if r.to_state == to_state and r.accepted)

    return asyncio.run(main())


@pytest.mark.parametrize(("kind", "rows"), [
    # A second terminal state for a finished task (and so also after_terminal, duplicate).
    ("terminal", [(tid(1), 1, "SUCCEEDED", "FAILED", 5, "n1", uuid.uuid4().hex)]),
    # Attempt 1 of task 3 writes after attempt 2 was placed.
    ("superseded", [(tid(3), 1, "RUNNING", "LOST", 6, "n2", uuid.uuid4().hex)]),
    # Task 5's attempt 1 writes from epoch 3 after epoch 8 was accepted.
    ("superseded", [(tid(5), 1, "RUNNING", "FAILED", 3, "n2", uuid.uuid4().hex)]),
    # The same transition applied twice (a retry that was not recognised).
    ("duplicate", [(tid(5), 1, "RUNNING", "RUNNING", 8, "n2", uuid.uuid4().hex)]),
    # Nothing may be accepted for a task after its terminal state.
    ("after_terminal", [(tid(4), 0, "CANCELLED", "QUEUED", 0, "", uuid.uuid4().hex)]),
    # A transition that does not start where the history stands (a lost write).
    ("chain", [(tid(5), 1, "ASSIGNED", "SUCCEEDED", 8, "n2", uuid.uuid4().hex)]),
    # Node n1 is given a task at epoch 4 after it was given one at epoch 7.
    ("epoch", [(tid(5), 2, "RUNNING", "ASSIGNED", 4, "n1", uuid.uuid4().hex)]),
])
def test_each_kind_of_violation_is_caught(url: str, kind: str,
                                          rows: list[tuple[object, ...]]) -> None:
    report = run_check(url, inject=rows)
    assert kind in {v.kind for v in report.violations}, report.violations
    assert not report.ok


def test_a_write_id_accepted_twice_is_a_duplicate(url: str) -> None:
    asyncio.run(_seed(url))
    wid = _write_id_of(url, tid(5), "RUNNING")
    _inject(url, [(tid(5), 1, "RUNNING", "SUCCEEDED", 8, "n2", wid)])

    report = asyncio.run(check_url(url))
    assert [v for v in report.violations if v.kind == "duplicate"
            and f"write {wid} accepted twice" in v.detail]
    assert {v.kind for v in report.violations} >= {"duplicate", "state"}


def test_the_command_line_reports_and_exits_nonzero_on_a_violation(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    assert run_check(url).ok
    cmd = [sys.executable, "-m", "cortexd.history", "--store", url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "5 tasks, 14 transitions (13 accepted, 1 refused); 4 ended, " \
        "1 active; 0 violations" in r.stdout, r.stdout + r.stderr
    _inject(url, [(tid(1), 1, "SUCCEEDED", "FAILED", 5, "n1", uuid.uuid4().hex)])
    r = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and '"kind": "terminal"' in r.stdout, r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "cortexd.history", "--store",
                        f"sqlite:///{tmp_path / 'nope.db'}"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "does not exist" in r.stderr
