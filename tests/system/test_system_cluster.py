"""Several hub hosts as one cluster (PostgreSQL + Redis): cross-host dispatch,
output back to a watcher on the other host, cancel through the other host, and
cluster-wide listings. Real cortexd and nodeagent processes on loopback."""

import time

import pytest

from examples.cluster import start_cluster
from examples.localfleet import Ctl
from tests.pg import pg_schema
from tests.rediskit import client as redis_client
from tests.rediskit import redis_prefix

pytestmark = pytest.mark.system


def test_task_submitted_at_a_runs_on_a_node_attached_to_b(fleet):
    with pg_schema() as store, redis_prefix() as (coordination, prefix):
        a, b = start_cluster(fleet, store, coordination)
        fleet.node(b, "node-b1", labels={"where": "b"})
        ctl_a, ctl_b = Ctl(a), Ctl(b)
        ctl_b.wait_nodes(["node-b1"])

        # Submitted and watched at A; runs on B's node; the output streams back to A.
        t0 = time.monotonic()
        result = ctl_a("submit", "--follow", "--", "sleep 0.3; echo cross-host")
        print(f"\nsubmit --follow at A, task on B: {time.monotonic() - t0:.2f} s")
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"cross-host\r\n"
        (task,) = ctl_a.json("tasks")
        assert (task["state"], task["node_id"]) == ("SUCCEEDED", "node-b1")

        # Watched at A while it runs on B, the task's events come as they happen
        # (forwarded by B), not from A re-reading the store every 2 s: RUNNING is seen,
        # and the output arrives before the terminal state.
        tid = ctl_a.submit("sleep 1.5; echo live")
        ctl_a.wait_state(tid, ["RUNNING"])
        events = ctl_a.json("watch", tid)
        kinds = [e["event"] if e["event"] != "state" else e["task"]["state"] for e in events]
        assert "output" in kinds and kinds.index("output") < kinds.index("SUCCEEDED"), kinds

        # A lists the whole cluster: B's node and both hosts' shards.
        nodes = {n["node_id"]: n for n in ctl_a.json("nodes")}
        assert nodes["node-b1"]["attached"] and nodes["node-b1"]["hub_id"] == "hub-b"
        shards = {(s["hub_id"], s["shard"]) for s in ctl_a.json("shards")}
        assert shards == {("hub-a", 0), ("hub-b", 0)}

        # A cancel sent to A reaches the task running on B's node.
        tid = ctl_a.submit("sleep 60")
        ctl_a.wait_state(tid, ["RUNNING"])
        ctl_a.ok("cancel", tid)
        assert ctl_a.wait_state(tid, ["CANCELLED"])["state"] == "CANCELLED"

        # A clean stop is a drain: exit 0 promptly, and the host's leases are released.
        r = redis_client()
        try:
            assert r.exists(f"{prefix}:lease:host:hub-b", f"{prefix}:lease:shard:hub-b:0") == 2
            t0 = time.monotonic()
            assert b.stop() == 0
            stop_s = time.monotonic() - t0
            assert r.exists(f"{prefix}:lease:host:hub-b", f"{prefix}:lease:shard:hub-b:0") == 0
            assert r.exists(f"{prefix}:lease:host:hub-a") == 1
        finally:
            r.close()
        assert a.stop() == 0
        print(f"hub B stopped cleanly in {stop_s:.2f} s, its leases released")
