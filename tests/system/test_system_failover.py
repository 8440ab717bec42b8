"""A nodeagent given several hub addresses fails over when its hub is killed -9.

Two cortexd processes share one signing key and one token table (what an operator
does for the hubs of one cluster: copy ``hub.key`` and the tokens to every hub's
state directory), so the node needs one ``--hub-key``. Its ``--node-port`` list also names
a port nothing listens on. Whichever hub the node attaches to first is killed with
SIGKILL; the node must attach to the other one and run a task there.
"""

import shutil
import socket
import time

import pytest

from examples.cluster import SHARED
from examples.localfleet import Ctl, LocalNode, log_events, wait_until

pytestmark = pytest.mark.system





@pytest.mark.timeout(120)
def test_node_fails_over_to_the_next_hub_after_kill_9(fleet):
    first = fleet.hub(shards=1)
    node = LocalNode(first, "node-1")
    node.dir.mkdir(parents=True)
    node.token_file.write_text(first.enroll("node-1") + "\n")
    node.token_file.chmod(0o600)
    # The second hub of the "cluster": same key, same tokens (docs/architecture.md).
    state = fleet.base / "hub1" / "hub"
    state.mkdir(parents=True)
    for name in SHARED:
        shutil.copy2(first.state_dir / name, state / name)
    second = fleet.hub(shards=1)
    assert (second.state_dir / "hub.pub").read_bytes() == first.hub_key_file.read_bytes()

    with socket.socket() as dead:  # bound, never listening: connections are refused
        dead.bind(("127.0.0.1", 0))
        dead_address = f"127.0.0.1:{dead.getsockname()[1]}"
        hubs = {first.node_address: first, second.node_address: second}
        node.extra_args = ["--node-port", ",".join([dead_address, *hubs])]
        fleet.all_nodes.append(node)
        node.start()

        attach = wait_until(lambda: log_events(node.log_path, "attach"), 30, "the first attach")
        victim = hubs.pop(attach[0]["address"])
        (survivor,) = hubs.values()
        Ctl(victim).wait_nodes(["node-1"])

        victim.kill()  # SIGKILL cortexd and all its children
        killed_at = time.monotonic()
        attaches = wait_until(lambda: a if len(a := log_events(node.log_path, "attach")) >= 2
                              else None, 30, "the node to attach to the other hub")
        failover_s = time.monotonic() - killed_at
        assert attaches[1]["address"] == survivor.node_address, attaches
        assert dead_address not in {a["address"] for a in attaches}
        print(f"failover: attached to the other hub {failover_s:.2f} s after kill -9")

    ctl = Ctl(survivor)
    ctl.wait_nodes(["node-1"])
    result = ctl("submit", "--follow", "--node", "node-1", "--", "echo after failover")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"after failover\r\n"
    # The node said where it went, and why it left.
    reconnects = log_events(node.log_path, "reconnect")
    assert any(r["address"] == victim.node_address for r in reconnects), reconnects
    assert node.stop() == 0


TICKS = 10
EXPECTED = b"".join(b"tick %d\r\n" % i for i in range(1, TICKS + 1))


@pytest.mark.timeout(150)
def test_running_task_survives_failover_between_cluster_hubs(fleet):
    """Two hubs of one cluster (PostgreSQL + Redis): the node's hub is killed -9 while
    a task runs; the node attaches to the other hub, reports the task in its Hello,
    is told KEEP, and the task finishes there with its whole output, at attempt 1."""
    from examples.cluster import start_cluster
    from tests.pg import pg_schema
    from tests.rediskit import redis_prefix

    with pg_schema() as store, redis_prefix() as (coordination, _):
        a, b = start_cluster(fleet, store, coordination)
        hubs = {a.node_address: a, b.node_address: b}
        node = LocalNode(a, "node-1", extra_args=["--node-port", ",".join(hubs)])
        node.dir.mkdir(parents=True)
        node.token_file.write_text(a.enroll("node-1") + "\n")
        node.token_file.chmod(0o600)
        shutil.copy(a.state_dir / "tokens", b.state_dir / "tokens")  # enrolled on both
        fleet.all_nodes.append(node)
        node.start()
        attach = wait_until(lambda: log_events(node.log_path, "attach"), 30, "the first attach")
        victim = hubs.pop(attach[0]["address"])
        (survivor,) = hubs.values()
        ctl = Ctl(survivor)
        ctl.wait_nodes(["node-1"])
        task_id = ctl.submit(f"for i in $(seq 1 {TICKS}); do echo tick $i; sleep 1; done",
                             "--node", "node-1")
        wait_until(lambda: ctl.task(task_id)["output_bytes"] > 0, 30, "the first output")

        victim.kill()
        wait_until(lambda: len(log_events(node.log_path, "attach")) >= 2, 30,
                   "the node to attach to the other hub")
        second = log_events(node.log_path, "attach")[1]
        assert second["address"] == survivor.node_address
        assert second["tasks"] == 1 and second["verdicts"] == 1, second

        out, status = ctl.watch(task_id, timeout_s=60)
        task = ctl.task(task_id)
        assert (out, status) == (EXPECTED, 0)
        assert (task["state"], task["attempt"], task["node_id"]) == ("SUCCEEDED", 1, "node-1")
        assert node.stop() == 0
