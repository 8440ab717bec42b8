"""Test 4: kill -9 a shard while 3 nodes run 5-second tasks.

The nodes it held reconnect, every task finishes exactly once (SUCCEEDED at
attempt 1) and every output is complete, without a gap or a duplicate.
"""

from collections import Counter

import pytest

from examples.localfleet import Ctl, start_time, wait_until

pytestmark = pytest.mark.system

TICKS = "for i in 1 2 3 4 5; do echo tick $i; sleep 1; done"
EXPECTED = b"".join(b"tick %d\r\n" % i for i in range(1, 6))


@pytest.mark.timeout(120)
def test_kill_a_shard_under_running_tasks(fleet):
    hub = fleet.hub(shards=2)
    ctl = Ctl(hub)
    nodes = fleet.nodes(hub, 3)
    tasks = [ctl.submit(TICKS, "--node", node.node_id) for node in nodes]
    for task_id in tasks:
        wait_until(lambda t=task_id: ctl.task(t)["output_bytes"] > 0, 20,
                   f"first output of {task_id}")

    before = {n["node_id"]: n for n in ctl.json("nodes") if n["attached"]}
    victim = Counter(n["shard"] for n in before.values()).most_common(1)[0][0]
    victim_nodes = {node_id for node_id, n in before.items() if n["shard"] == victim}
    victim_pid = hub.kill_shard(victim)

    for task_id in tasks:
        out, status = ctl.watch(task_id, timeout_s=60)
        assert (status, out) == (0, EXPECTED), task_id
        task = ctl.task(task_id)
        assert (task["state"], task["attempt"]) == ("SUCCEEDED", 1), task
        assert task["output_bytes"] == len(EXPECTED)

    assert sorted(t["task_id"] for t in ctl.json("tasks")) == sorted(tasks)  # no retry task
    assert hub.running(), "cortexd itself must survive a shard's death"
    ctl.wait_nodes(n.node_id for n in nodes)
    after = {n["node_id"]: n["session_epoch"] for n in ctl.json("nodes")}
    moved = {i for i in after if after[i] != before[i]["session_epoch"]}
    assert victim_nodes <= moved, "the killed shard's nodes re-attach with a new session epoch"

    def replaced() -> bool:
        shards = {s["shard"]: s for s in ctl.json("shards")}
        return shards[victim]["alive"] and shards[victim]["pid"] != victim_pid
    wait_until(replaced, 30, f"shard {victim} to be restarted")
    assert start_time(victim_pid) is None
