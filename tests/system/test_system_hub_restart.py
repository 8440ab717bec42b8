"""Test 5: SIGTERM cortexd while tasks run, start it again on the same state and ports.

The tasks survive on the nodes; once the nodes re-attach, their whole outputs
and their exit codes are recorded, each at attempt 1.
"""

import pytest

from examples.localfleet import Ctl, wait_until

pytestmark = pytest.mark.system

SECONDS = 8


def ticks(exit_code: int) -> str:
    return f"for i in $(seq 1 {SECONDS}); do echo tick $i; sleep 1; done; exit {exit_code}"


EXPECTED = b"".join(b"tick %d\r\n" % i for i in range(1, SECONDS + 1))


@pytest.mark.timeout(150)
def test_tasks_survive_a_hub_restart(fleet):
    hub = fleet.hub(shards=2)
    ctl = Ctl(hub)
    nodes = fleet.nodes(hub, 3)
    exit_codes = {"node-1": 0, "node-2": 3, "node-3": 7}
    tasks = {ctl.submit(ticks(exit_codes[n.node_id]), "--node", n.node_id): n.node_id
             for n in nodes}
    for task_id in tasks:
        wait_until(lambda t=task_id: ctl.task(t)["output_bytes"] > 0, 20,
                   f"first output of {task_id}")
    node_port, control_port = hub.node_port, hub.control_port

    assert hub.stop(timeout_s=30) == 0
    assert all(n.running() for n in nodes), "nodeagents must outlive the hub"
    hub.start()
    assert (hub.node_port, hub.control_port) == (node_port, control_port)
    ctl.wait_nodes(tasks.values(), timeout_s=40)

    for task_id, node_id in tasks.items():
        out, status = ctl.watch(task_id, timeout_s=60)
        task = ctl.task(task_id)
        code = exit_codes[node_id]
        assert out == EXPECTED, (task_id, out)
        assert status == code
        assert task["exit_code"] == code and task["attempt"] == 1, task
        assert task["state"] == ("SUCCEEDED" if code == 0 else "FAILED"), task
        assert task["node_id"] == node_id
