"""The live stream's per-task rate limit, through the real node → hub path.

A noisy task is held to ~15,000 B/s (burst 64 KiB) and its held-back bytes show in
``cortexctl get --json``; a quiet task's one line on the same node arrives at once;
after the noisy task ends, the rest of its spool reaches the hub (catch-up rate).
"""

import time

import pytest

from cortex.v1 import control_pb2 as pb
from examples.localfleet import wait_until
from tests.hubkit import admin_client

pytestmark = pytest.mark.system

# ~400 KB/s of 'n' lines for up to 30 s: far above the 15,000 B/s cap.
NOISY = ("i=0; while [ $i -lt 600 ]; do head -c 20000 /dev/zero | tr '\\0' n; echo; "
         "sleep 0.05; i=$((i+1)); done")


@pytest.mark.timeout(90)
def test_noisy_task_is_held_back_and_a_quiet_line_arrives_at_once(fleet, hub, ctl):
    fleet.nodes(hub, 1)
    noisy = ctl.submit(NOISY, "--node", "node-1")
    task = wait_until(lambda: (t := ctl.task(noisy))["held_back_bytes"] > 100_000 and t,
                      20, "the noisy task to be held back")
    assert task["state"] == "RUNNING" and task["spooled_bytes"] > task["output_bytes"]

    # The rate the hub receives it at: at most the burst plus 15,000 B/s.
    with admin_client(hub) as c:
        first = c.get_task(noisy)
        t0 = time.monotonic()
        time.sleep(2.0)  # the measured interval itself, not a synchronisation
        second = c.get_task(noisy)
        rate = (second.output_bytes - first.output_bytes) / (time.monotonic() - t0)
        print(f"noisy task: {rate:.0f} B/s at the hub, held back {second.held_back_bytes} B")
        assert rate < 15_000 * 1.5

        # A quiet task on the same node: its line is not queued behind the noisy one.
        t0 = time.monotonic()
        quiet = c.submit(pb.SubmitRequest(command="echo quiet-line",
                                          node_id="node-1")).task.task_id
        got = b""
        for event in c.watch(quiet):
            if event.WhichOneof("kind") == "output":
                got += event.output.data
                if b"quiet-line" in got:
                    break
        latency = time.monotonic() - t0
        print(f"quiet line arrived {latency * 1000:.0f} ms after submit")
        assert latency < 1.0
        assert c.get_task(noisy).held_back_bytes > 0  # still held back meanwhile

        # The node's spool is ahead of the hub's copy; logs reads it from the node.
        now = c.get_task(noisy)
        ahead = ctl.ok("logs", noisy, "--length", str(now.spooled_bytes))
        assert len(ahead) == now.spooled_bytes > now.output_bytes

        # After it ends, the held-back rest is drained: the hub gets every byte.
        ctl.ok("cancel", noisy)
        done = ctl.wait_state(noisy, {"CANCELLED"}, timeout_s=30)
        assert done["held_back_bytes"] == 0
        assert "hub holds" not in done["reason"]  # the node sent its whole spool
        assert done["output_bytes"] >= task["spooled_bytes"]
