"""The control process stalls (SIGSTOP; in life: its store is down, a long GC, a slow
disk) while nodes stream output: the rings to it fill, the shards stop reading the
nodes' streams (back-pressure), and yet no node is dropped — while a node's frame waits
for ring room, its shard tells it the hub lives and does not count the wait as the
node's silence. After SIGCONT every task finishes with all of its output."""

import os
import signal
import time

import pytest

from examples.cluster import SimFleet, wait_for
from examples.localfleet import Ctl

pytestmark = pytest.mark.system


def test_a_stalled_control_process_drops_no_node(fleet, tmp_path):
    config = tmp_path / "cortexd.toml"
    # Small rings (the minimum for 64 KiB frames) and a short heartbeat: the ring fills
    # within the stall, and a node would be dropped after 3 x 0.5 s of hearing nothing.
    config.write_text("max_frame_bytes = 65536\nring_capacity_bytes = 135168\n"
                      "heartbeat_interval_ms = 500\n")
    sim = SimFleet(fleet.base, "st", [], 20, task_s=0.0, bound_s=110)
    sim.extra = ["--stream-bps", "200000", "--stream-s", "6"]
    sim.enroll(fleet.base / "hub0" / "hub" / "tokens")
    hub = fleet.hub(shards=1, extra_args=["--config", str(config)])
    sim.hubs = [hub]
    sim.start()
    try:
        wait_for(lambda: sim.attached() == 20, 60, "20 nodes attached")
        ctl = Ctl(hub)
        ids = [ctl.submit("true") for _ in range(20)]
        wait_for(lambda: sim.status().get("bytes_sent", 0) > 1 << 20, 30, "output flowing")
        control = int(hub.read_info()["control_pid"])
        os.kill(control, signal.SIGSTOP)
        try:
            time.sleep(8.0)  # the stall itself is under test: 16 heartbeat intervals, and
            # more than one of the shard's 5 s sweeps for silent sessions
        finally:
            os.kill(control, signal.SIGCONT)
        for tid in ids:
            ctl.wait_state(tid, ["SUCCEEDED"], timeout_s=60)
        status = sim.status()
        tasks = {t["task_id"]: t for t in ctl.json("tasks")}
        assert all(tasks[t]["output_bytes"] == 200_000 * 6 for t in ids), tasks
        assert status["dropped"] == 0, "a node was dropped while control stalled"
        hub.stop()
        log = hub.log_path.read_text()
        waits = [line for line in log.splitlines() if '"shard_stopped"' in line]
        print(f"\ncontrol stalled 8 s under 20 x 200 KB/s of output: 0 nodes dropped; "
              f"{waits}")
        assert '"waits_for_ring_room": 0' not in waits[-1], "the ring never filled (too weak)"
    finally:
        sim.kill()
