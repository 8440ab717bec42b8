"""Workspaces on a PostgreSQL store: the records' PostgreSQL path under a real hub.

The same life as the SQLite tests (first sync, edits both ways, a conflict kept and
resolved, a task in the workspace) on the server at 127.0.0.1:5432 (tests/pg.py: one
fresh schema; skipped without the server, failed without it in CI), then a hub restart:
what was recorded in PostgreSQL (attachments, the synced base, conflicts) is what the
new hub goes on from — an edit after it syncs, and nothing is taken for a deletion.
"""

import psycopg
import pytest

from examples.localfleet import Ctl, wait_until
from tests.pg import pg_schema
from tests.system.test_system_workspace import converged, digest, hub_tree, make_source

pytestmark = pytest.mark.system


@pytest.mark.timeout(300)
def test_a_workspace_on_postgresql_syncs_conflicts_runs_tasks_and_survives_a_restart(
        fleet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pg_schema() as url:
        hub = fleet.hub(shards=1, extra_args=["--store", url])
        ctl = Ctl(hub)
        node = fleet.nodes(hub, 1)[0]
        src = tmp_path / "src-tree"
        make_source(src)
        ctl.ok("workspace", "create", "wp", "--from", str(src))
        ht, copy = hub_tree(hub, "wp"), tmp_path / "copy"
        ctl.ok("workspace", "attach", "wp", "--node", node.node_id, "--path", str(copy))
        wait_until(lambda: converged(ht, copy), 60, "first sync")
        (copy / "node.txt").write_text("from the node\n")
        wait_until(lambda: (ht / "node.txt").exists(), 30, "node -> hub")

        # a both-sided edit while the node is away: a conflict, recorded in PostgreSQL
        assert node.stop() == 0
        (ht / "src" / "main.py").write_text("hub's version\n")
        (copy / "src" / "main.py").write_text("node's version\n")
        node.start()
        wait_until(lambda: len(ctl.json("workspace", "conflicts", "wp")) == 1, 60, "conflict")
        ctl.ok("workspace", "resolve", "wp", "src/main.py", "--keep", "hub")
        wait_until(lambda: converged(ht, copy)
                   and (copy / "src" / "main.py").read_text() == "hub's version\n", 30,
                   "resolved")

        # a task in the workspace: its row carries it in PostgreSQL
        (ht / "msg.txt").write_text("for the task\n")
        tid = ctl.submit("cat msg.txt > seen.txt", "--workspace", "wp")
        assert ctl.watch(tid)[1] == 0
        assert (copy / "seen.txt").read_text() == "for the task\n"
        wait_until(lambda: (ht / "seen.txt").exists(), 30, "the task's file on the hub")
        with psycopg.connect(url) as conn:
            (ws,) = conn.execute("SELECT workspace FROM tasks WHERE task_id = %s",
                                 (tid,)).fetchone()
            synced = conn.execute("SELECT count(*) FROM workspace_synced").fetchone()[0]
            (rounds,) = conn.execute("SELECT rounds FROM workspace_attachments").fetchone()
        assert ws == "wp" and synced >= 10 and rounds > 0, (ws, synced, rounds)

        # a restart: the new hub loads attachments, base and conflicts from PostgreSQL
        want = digest(ht)
        assert hub.stop() == 0
        hub.start()
        ctl.wait_nodes([node.node_id], timeout_s=40)
        (att,) = ctl.json("workspace", "status", "wp")[0]["attachments"]
        assert att["node_id"] == node.node_id and int(att["rounds"]) >= rounds, att
        done = ctl.json("workspace", "conflicts", "wp", "--all")
        assert [(c["path"], c["resolution"]) for c in done] == [("src/main.py", "hub")], done
        (copy / "after.txt").write_text("after the restart\n")
        wait_until(lambda: (ht / "after.txt").exists() and converged(ht, copy), 60,
                   "a sync after the restart")
        assert (ht / "node.txt").exists() and (copy / "node.txt").exists()
        assert digest(copy) != want  # after.txt came, nothing left
        hub.stop()
