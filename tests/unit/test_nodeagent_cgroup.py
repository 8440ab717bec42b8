"""Task cgroups and timeouts against real processes and the host's real cgroups.

Where no cgroup hierarchy is writable these tests skip, except in CI (``CI`` set), where
they fail: CI machines have writable cgroups, and a silent skip would hide a regression.
Every test bounds itself (hard timeouts on the tasks, pytest's timeout on the test) and
kills what it started.
"""

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import structlog
import uvloop

from nodeagent import procgroup
from nodeagent.cgroup import (
    AGENT_DIR_PREFIX,
    PROCESS_GROUP,
    CgroupTree,
    Hierarchy,
    Limits,
    TaskCgroup,
    discover,
    sweep_dead_agents,
)
from nodeagent.runner import EXITED, TIMED_OUT, RunSpec, TaskExit, TaskProcess
from nodeagent.timeouts import idle_deadline

T = TypeVar("T")
log = structlog.get_logger()


def run(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


@pytest.fixture
def tree() -> Iterator[CgroupTree]:
    t = CgroupTree.open(log)
    if t.mode == PROCESS_GROUP:
        if os.environ.get("CI"):
            pytest.fail("no writable cgroup hierarchy on this CI machine")
        pytest.skip("no writable cgroup hierarchy here")
    try:
        yield t
    finally:
        t.close()


async def run_task(spec: RunSpec, cgroup: TaskCgroup | None,
                   grace_s: float = 0.2) -> tuple[TaskExit, bytes, int]:
    out = bytearray()
    proc = TaskProcess(spec, out.extend, cancel_grace_s=grace_s, cgroup=cgroup)
    pid = proc.start()
    return await proc.wait(), bytes(out), pid


def processes_with(marker: str) -> list[int]:
    """Live processes whose command line contains ``marker``."""
    found = []
    for pid in procgroup.all_pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        st = procgroup.proc_stat(pid)
        if marker.encode() in cmdline and st is not None and st.state not in ("Z", "X"):
            found.append(pid)
    return found


def unique_sleep() -> str:
    """A ``sleep`` argument no other process has: 4000.<random> seconds."""
    return f"4000.{secrets.randbelow(10**8):08d}"


# ---- pure parts -----------------------------------------------------------------

def test_discover_reads_the_hybrid_layout() -> None:
    mounts = ("cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0\n"
              "cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n"
              "cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n"
              "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n"
              "proc /proc proc rw 0 0\n")
    own = "8:pids:/\n4:memory:/svc/abc\n1:cpu:/\n0::/\n"
    found = {(h.kind, str(h.own)) for h in discover(mounts, own)}
    assert ("pids", "/sys/fs/cgroup/pids") in found
    assert ("memory", "/sys/fs/cgroup/memory/svc/abc") in found
    # The unified hierarchy's controllers are read from the host; either kind is right.
    assert {k for k, p in found if p == "/sys/fs/cgroup/unified"} <= {"v2", "unified"}
    assert len(found) == 3


def test_idle_deadline_counts_from_the_last_output() -> None:
    assert idle_deadline(started=10.0, last_output=0.0, idle_s=5.0) == 15.0
    assert idle_deadline(started=10.0, last_output=12.5, idle_s=5.0) == 17.5


# ---- timeouts (any isolation) -----------------------------------------------------

def test_idle_timeout_kills_a_silent_task_and_says_why() -> None:
    t0 = time.monotonic()
    result, out, pid = run(run_task(
        RunSpec("echo a; sleep 0.4; echo b; sleep 1000", idle_timeout_s=0.6), None))
    elapsed = time.monotonic() - t0
    assert (result.kind, result.reason) == (TIMED_OUT, "idle timeout: no output for 0.6 s")
    assert b"a\r\n" in out and b"b\r\n" in out
    assert 1.0 <= elapsed < 3.0  # output at 0.4 s re-armed it: idle from 0.4 s on
    assert procgroup.live_members(pid, pid) == []


def test_steady_output_keeps_the_idle_timeout_away() -> None:
    result, _, _ = run(run_task(
        RunSpec("for i in 1 2 3 4 5 6; do echo $i; sleep 0.15; done", idle_timeout_s=0.5),
        None))
    assert result == TaskExit(0, EXITED, "")


def test_hard_timeout_says_why() -> None:
    result, _, pid = run(run_task(RunSpec("while :; do echo x; sleep 0.05; done",
                                          timeout_s=0.5, idle_timeout_s=5), None))
    assert (result.kind, result.reason) == (TIMED_OUT, "hard timeout after 0.5 s")
    assert procgroup.live_members(pid, pid) == []


def test_double_fork_daemon_is_gone_after_the_task_without_cgroups() -> None:
    marker = unique_sleep()
    result, out, pid = run(run_task(RunSpec(f"(sleep {marker} &); echo started"), None))
    assert result.exit_code == 0 and b"started" in out
    assert processes_with(marker) == []


# ---- cgroups ------------------------------------------------------------------------

def test_task_runs_inside_its_cgroup_from_its_first_instruction(tree: CgroupTree) -> None:
    cg = tree.create("t-inside-1", Limits())
    assert cg is not None
    result, out, _ = run(run_task(RunSpec("cat /proc/self/cgroup"), cg))
    assert result.exit_code == 0
    for d in cg.dirs.values():
        assert f"/{d.parent.name}/{d.name}".encode() in out  # each hierarchy's path
        assert not d.exists()  # removed after the task


def test_setsid_daemon_and_signal_ignorers_die_with_the_task(tree: CgroupTree) -> None:
    cg = tree.create("t-daemon-1", Limits())
    assert cg is not None
    marker = unique_sleep()
    command = (f"(setsid sh -c 'trap \"\" HUP INT TERM; sleep {marker}' &); "
               f"(trap '' HUP INT TERM; sleep {marker} &); echo started")
    result, out, _ = run(run_task(RunSpec(command), cg))
    assert result.exit_code == 0 and b"started" in out
    assert processes_with(marker) == []  # the setsid one left group and session
    assert not any(d.exists() for d in cg.dirs.values())


def test_hard_timeout_kills_the_whole_cgroup(tree: CgroupTree) -> None:
    cg = tree.create("t-hard-1", Limits())
    assert cg is not None
    marker = unique_sleep()
    command = (f"(setsid sh -c 'trap \"\" INT TERM; sleep {marker}' &); "
               f"trap '' INT TERM; sleep {marker}")
    t0 = time.monotonic()
    result, _, _ = run(run_task(RunSpec(command, timeout_s=0.3), cg, grace_s=0.1))
    assert (result.kind, result.reason) == (TIMED_OUT, "hard timeout after 0.3 s")
    assert time.monotonic() - t0 < 3.0
    assert processes_with(marker) == []


def test_fork_bomb_is_bounded_by_pids_max(tree: CgroupTree) -> None:
    if not tree.limits_enforced[1]:
        pytest.skip("no pids controller")
    pids_max = 50
    cg = tree.create("t-bomb-1", Limits(pids_max=pids_max))
    assert cg is not None
    marker = unique_sleep()
    # Bounded on purpose: 500 forks at most, each a sleeper; the limit stops it at 50.
    bomb = f"i=0; while [ $i -lt 500 ]; do sleep {marker} & i=$((i+1)); done; wait"
    seen_max = 0

    out = bytearray()

    async def main() -> TaskExit:
        nonlocal seen_max
        proc = TaskProcess(RunSpec(bomb, timeout_s=2.0), out.extend, cancel_grace_s=0.1,
                           cgroup=cg)
        proc.start()
        while not proc.done.done():
            seen_max = max(seen_max, len(cg.pids()))
            await asyncio.sleep(0.02)
        return await proc.wait()

    result = run(main())
    # The shell gives up at the limit ("Cannot fork": dash exits 2), or, had it gone on
    # waiting for its sleepers, the hard timeout ends it; either way not a success.
    assert b"fork" in out.lower(), bytes(out)
    assert result.exit_code != 0 and result.kind in (EXITED, TIMED_OUT)
    assert 0 < seen_max <= pids_max
    peak = cg.pids_peak()
    assert peak is None or peak <= pids_max
    assert processes_with(marker) == []
    subprocess.run(["true"], check=True)  # this process (the agent here) can still fork


def test_memory_hog_is_killed_at_its_memory_limit(tree: CgroupTree) -> None:
    if not tree.limits_enforced[0]:
        pytest.skip("no memory controller")
    cg = tree.create("t-hog-1", Limits(memory_max_bytes=64 << 20))
    assert cg is not None
    hog = f"exec {sys.executable} -c 'b = b\"x\" * (256 << 20); print(len(b))'"
    result, out, _ = run(run_task(RunSpec(hog, timeout_s=20.0), cg))
    assert result.kind == EXITED
    assert result.exit_code == -9, out
    assert result.reason == "out of memory: killed at the task's memory limit"
    assert str(256 << 20).encode() not in out


def test_dead_agents_directories_are_swept(tree: CgroupTree) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    kind, agent_dir = next(iter(tree.agent_dirs.items()))
    own = agent_dir / "own"  # private: another agent's start-up sweep must not race ours
    stale = own / f"{AGENT_DIR_PREFIX}{dead.pid}-0badc0de"
    leaf = stale / "task-left-1"
    leaf.mkdir(parents=True)
    marker = unique_sleep()
    left = subprocess.Popen(["sh", "-c", f'echo $$ > {leaf}/cgroup.procs; exec sleep {marker}'])
    try:
        for _ in range(100):
            if (leaf / "cgroup.procs").read_text().split():
                break
            time.sleep(0.01)
        assert sweep_dead_agents(own, kind, log) == 1
        assert left.wait(timeout=5) == -9
        assert not stale.exists()
    finally:
        if left.poll() is None:
            left.kill()
            left.wait()


def test_an_unwritable_hierarchy_means_process_groups(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-mount"
    t = CgroupTree.open(log, [Hierarchy("pids", missing)])
    assert t.mode == PROCESS_GROUP and t.create("t-x-1", Limits(pids_max=5)) is None


def test_without_cgroup_kill_the_procs_are_killed_until_none_is_left(tree: CgroupTree) -> None:
    if "pids" not in tree.agent_dirs:
        pytest.skip("no v1 pids hierarchy")
    pids_only = CgroupTree({"pids": tree.agent_dirs["pids"]})  # cgroup.procs, no cgroup.kill
    cg = pids_only.create("t-procs-1", Limits(pids_max=40))
    assert cg is not None
    marker = unique_sleep()
    # Forkers racing the kill: each round's list may miss a child forked after the read.
    command = (f"(setsid sh -c 'while :; do sleep {marker} & sleep 0.01; done' &); "
               "sleep 0.3; echo started")
    result, out, _ = run(run_task(RunSpec(command, timeout_s=5.0), cg))
    assert result.exit_code == 0 and b"started" in out
    assert processes_with(marker) == []
    assert not cg.dirs["pids"].exists()
