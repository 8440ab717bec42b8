"""Issue 3, items 1 and 9, end to end through cortexctl: idle and hard timeouts end the
whole tree and are recorded as TIMED_OUT with the reason; the node reports its isolation;
with cgroups, a memory hog dies at its limit and a setsid daemon does not outlive its task.
"""

import os
import uuid

import pytest

from examples.localfleet import wait_until
from examples.proctable import all_pids, cmdline

pytestmark = pytest.mark.system


def _left(marker: str) -> list[int]:
    return [p for p in all_pids() if marker in cmdline(p)]


def test_idle_and_hard_timeouts_through_cortexctl(fleet, hub, ctl):
    node = fleet.node(hub, "node-1", extra_args=["--cancel-grace-s", "0.3"])
    ctl.wait_nodes([node.node_id])
    (listed,) = [n for n in ctl.json("nodes") if n["node_id"] == node.node_id]
    assert listed["isolation"] in ("cgroup", "process-group")
    if listed["isolation"] != "cgroup" and os.environ.get("CI"):
        pytest.fail("CI machines have writable cgroups: the node must use them")
    cgroups = listed["isolation"] == "cgroup"

    marker = f"1000.{uuid.uuid4().int % 10**8:08d}"  # a sleep no other process has
    # A silent task whose children ignore INT/TERM and, with cgroups, one left its session.
    hidden = f"(setsid sh -c 'trap \"\" INT TERM; sleep {marker}' &); " if cgroups else ""
    idle_id = ctl.submit(f"trap '' INT TERM; {hidden}(sleep {marker} &); "
                         f"echo started; sleep {marker}", "--idle-timeout", "1")
    hard_id = ctl.submit(f"while :; do echo tick; sleep 0.1; done; sleep {marker}",
                         "--task-timeout", "2", "--idle-timeout", "60")

    out, status = ctl.watch(idle_id, timeout_s=30)
    assert status == 124 and b"started" in out
    task = ctl.task(idle_id)
    assert (task["state"], task["reason"]) == ("TIMED_OUT", "idle timeout: no output for 1 s")

    out, status = ctl.watch(hard_id, timeout_s=30)
    assert status == 124 and out.count(b"tick") >= 5  # output did not save it
    task = ctl.task(hard_id)
    assert (task["state"], task["reason"]) == ("TIMED_OUT", "hard timeout after 2 s")

    wait_until(lambda: not _left(marker), 5, "no process of the timed-out tasks")


def test_memory_limit_through_cortexctl(fleet, hub, ctl):
    node = fleet.node(hub, "node-1", extra_args=["--cancel-grace-s", "0.3"])
    ctl.wait_nodes([node.node_id])
    (listed,) = [n for n in ctl.json("nodes") if n["node_id"] == node.node_id]
    if listed["isolation"] != "cgroup":
        if os.environ.get("CI"):
            pytest.fail("CI machines have writable cgroups: the node must use them")
        pytest.skip("no writable cgroups here")
    hog = "exec python3 -c 'b = b\"x\" * (256 << 20); print(\"survived\")'"
    task_id = ctl.submit(hog, "--memory-max", "64M", "--pids-max", "20", "--task-timeout", "30")
    out, status = ctl.watch(task_id, timeout_s=60)
    task = ctl.task(task_id)
    assert b"survived" not in out
    assert (task["state"], task["exit_code"]) == ("FAILED", -9), task
    assert task["reason"] == "out of memory: killed at the task's memory limit"
    assert status != 0
    assert node.running  # the agent survived its task
