"""EXECUTE across two real nodes, exactly once (DESIGN.md §6, issue 10).

A monitored task runs on node A; when it exits 0 its rule EXECUTEs a follow-up on
node B. The monitor records the decision before it applies it, and a test-only
setting (``monitor_hold_before_apply_ms``) holds it in between, so the tests can hit
that window:

- a double wake-up: the monitor is nudged twice and its process is killed with
  SIGKILL while the decision waits (the supervisor respawns it and it is fed the
  same end again);
- kill -9 of the whole hub (supervisor and every child) between the decision and
  the submission; the hub is started again on the same state.

Either way the follow-up runs exactly once on B (it appends a line to a file),
linked to its cause: ``cortexctl get`` shows parent and children, ``cortexctl
tree`` draws the chain.
"""

import os
import signal
from pathlib import Path

import pytest

from examples.localfleet import Ctl, LocalHub, wait_until

pytestmark = pytest.mark.system


def policy(ran: Path) -> str:
    return f'''
check_every_s = 0
[[rule]]
id = "then-b"
on = "end"
exit_code = 0
action = "EXECUTE"
node = "node-b"
command = "echo ran-on-b >> {ran}"
'''


def config(tmp_path: Path, hold_ms: int) -> list[str]:
    path = tmp_path / f"hub-{hold_ms}.toml"
    path.write_text(f"monitor_hold_before_apply_ms = {hold_ms}\n")
    return ["--config", str(path)]


def start(fleet, tmp_path: Path, hold_ms: int) -> tuple[LocalHub, Ctl]:
    hub = fleet.hub(extra_args=config(tmp_path, hold_ms))
    fleet.node(hub, "node-a", labels={"site": "a"})
    fleet.node(hub, "node-b", labels={"site": "b"})
    ctl = Ctl(hub)
    ctl.wait_nodes(["node-a", "node-b"], timeout_s=60)
    return hub, ctl


def submit_root(ctl: Ctl, tmp_path: Path, ran: Path) -> str:
    pfile = tmp_path / "then-b.toml"
    pfile.write_text(policy(ran))
    ctl.ok("policies", "put", "then-b", str(pfile))
    return ctl.submit("echo on-a", "--node", "node-a", "--monitor", "then-b",
                      "--goal", "a then b")


def wait_recorded(ctl: Ctl, tid: str) -> dict:
    def recorded() -> dict | None:
        ds = ctl.json("decisions", tid)
        return ds[0] if ds else None
    d = wait_until(recorded, 90, f"the decision of {tid}", interval_s=0.1)
    assert (d["action"], d["trigger_key"], d["rule_id"]) == ("EXECUTE", "end:1", "then-b")
    return d


def check_once(ctl: Ctl, tid: str, ran: Path) -> None:
    def child() -> str | None:
        kids = ctl.task(tid)["children"]
        return kids[0] if kids else None
    kid = wait_until(child, 90, f"the follow-up of {tid}", interval_s=0.2)
    done = ctl.wait_state(kid, ["SUCCEEDED"], timeout_s=90)
    assert done["node_id"] == "node-b"
    assert ran.read_text() == "ran-on-b\n"  # exactly once
    root = ctl.task(tid)
    assert root["children"] == [kid] and root["node_id"] == "node-a"
    follow = ctl.task(kid)
    assert follow["parent_task_id"] == tid and follow["session_id"] == root["session_id"]
    tree = ctl.ok("tree", kid).decode()
    assert tree.splitlines()[0].startswith(tid) and kid in tree.splitlines()[1], tree
    assert "(after end:1)" in tree
    d = ctl.json("decisions", tid)
    assert len(d) == 1 and d[0]["applied"] and kid in d[0]["result"]
    session = ctl.json("session", "show", root["session_id"])[0]
    assert {t["task_id"] for t in session["task_list"]} == {tid, kid}


def test_execute_runs_once_under_a_double_wake(fleet, tmp_path: Path) -> None:
    hub, ctl = start(fleet, tmp_path, hold_ms=4000)
    ran = tmp_path / "ran-b.log"
    tid = submit_root(ctl, tmp_path, ran)
    wait_recorded(ctl, tid)
    ctl.ok("nudge", tid)
    ctl.ok("nudge", tid)
    monitor_pid = hub.read_info()["monitors"][0]["pid"]
    os.kill(monitor_pid, signal.SIGKILL)
    wait_until(lambda: hub.read_info()["monitors"][0]["pid"] not in (0, monitor_pid), 60,
               "the monitor process to be respawned", interval_s=0.2)
    ctl("nudge", tid)  # a third wake (refused if the new monitor already finished)
    check_once(ctl, tid, ran)
    assert ctl.task(tid)["monitor_state"] == "done"
    late = ctl("nudge", tid)
    assert late.returncode == 1 and b"no monitor watching" in late.stderr


def test_execute_runs_once_across_kill_9_of_the_hub(fleet, tmp_path: Path) -> None:
    hub, ctl = start(fleet, tmp_path, hold_ms=600_000)  # never applied by this hub
    ran = tmp_path / "ran-b.log"
    tid = submit_root(ctl, tmp_path, ran)
    d = wait_recorded(ctl, tid)
    assert not d["applied"] and ctl.task(tid)["children"] == []
    hub.kill()  # SIGKILL: the supervisor and every child, between decision and submission
    hub.extra_args = config(tmp_path, 0)
    hub.start(timeout_s=60)
    ctl.wait_nodes(["node-a", "node-b"], timeout_s=90)
    check_once(ctl, tid, ran)
