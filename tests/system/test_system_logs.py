"""``cortexctl logs``: ranges of a task's spool read from the node through the hub, the
hub's copy once the node no longer has it, and the errors when neither can serve."""

import pytest

pytestmark = pytest.mark.system

# 40,000 lines of 48 digits + the PTY's \r\n: 2,000,000 bytes (two 1 MiB node reads).
BIG = "seq -f '%048g' 1 40000"


def spool_dir(node, task_id: str, attempt: int = 1):
    return node.dir / "state" / "tasks" / f"{task_id}.{attempt}"


def test_logs_read_ranges_from_the_node_spool(fleet, hub, ctl):
    node = fleet.nodes(hub, 1)[0]
    task_id = ctl.submit(BIG)
    out, status = ctl.watch(task_id)
    assert status == 0 and len(out) == 2_000_000
    ctl.wait_state(task_id, {"SUCCEEDED"})
    # FinishedAck came: the node keeps the spool (retention), and logs reads it.
    assert (spool_dir(node, task_id) / "output").stat().st_size == 2_000_000
    assert ctl.ok("logs", task_id) == out
    assert ctl.ok("logs", task_id, "--from", "1000", "--length", "5000") == out[1000:6000]
    assert ctl.ok("logs", task_id, "--from", "1999990") == out[1999990:]
    assert ctl.ok("logs", task_id, "--from", "5000000") == b""
    chunks = ctl.json("logs", task_id, "--from", "10", "--length", "70000")
    assert [c["offset"] for c in chunks] == [10, 10 + 65536]

    missing = ctl("logs", task_id, "--attempt", "2")
    assert missing.returncode == 1 and b"no attempt 2" in missing.stderr

    # The node goes away: a finished task is served from the hub's copy.
    node.stop()
    assert ctl.ok("logs", task_id, "--from", "123", "--length", "456") == out[123:579]


def test_pruned_spool_falls_back_to_the_hub_copy(fleet, hub, ctl):
    node = fleet.node(hub, "node-1", extra_args=["--spool-retention-bytes", "0"])
    ctl.wait_nodes(["node-1"])
    task_id = ctl.submit("echo pruned-but-not-lost")
    assert ctl.watch(task_id) == (b"pruned-but-not-lost\r\n", 0)
    from examples.localfleet import wait_until
    wait_until(lambda: not spool_dir(node, task_id).exists(), 10, "the spool to be pruned")
    assert ctl.ok("logs", task_id) == b"pruned-but-not-lost\r\n"


def test_running_task_on_a_detached_node_is_unavailable(fleet, hub, ctl):
    node = fleet.nodes(hub, 1)[0]
    task_id = ctl.submit("echo started; sleep 60")
    ctl.wait_state(task_id, {"RUNNING"})
    node.kill()  # SIGKILL: the hub keeps the task RUNNING for its node grace
    from examples.localfleet import wait_until
    wait_until(lambda: not ctl.json("nodes")[0]["attached"], 20, "the node to detach")
    result = ctl("logs", task_id)
    assert result.returncode == 1
    assert b"node node-1 is not attached" in result.stderr, result.stderr
