"""The worker shim with real processes: a task in its own worker process.

Output complete and in order, exit codes, spawn errors; a worker killed with SIGKILL
mid-task (the task's tree is killed and the task finishes LOST, the agent's loop goes
on); a gone agent (the worker kills its task and exits); a flooding task does not delay
another's output; a slow agent bounds the worker's memory without losing a byte.
"""

import asyncio
import os
import signal
import time
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
import uvloop

from cortex.v1 import node_pb2
from nodeagent import procgroup
from nodeagent.errors import SpawnError
from nodeagent.runner import EXITED, RunSpec, TaskExit
from nodeagent.workertask import WorkerTask

LOST = node_pb2.FINISH_KIND_LOST


def run(coro: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro)


class Run:
    def __init__(self, command: str, **spec: object) -> None:
        self.out = bytearray()
        self.started: list[int] = []
        self.failed: list[SpawnError] = []
        self.first_output_at = 0.0
        self.task = WorkerTask(RunSpec(command, **spec),  # type: ignore[arg-type]
                               self._output, on_started=self.started.append,
                               on_start_failed=self.failed.append, cancel_grace_s=0.2)

    def _output(self, data: bytes) -> None:
        assert self.started, "output before started"
        if not self.out:
            self.first_output_at = time.monotonic()
        self.out += data

    async def until_started(self, timeout_s: float = 10.0) -> int:
        deadline = time.monotonic() + timeout_s
        while not self.started:
            assert time.monotonic() < deadline, "worker did not start the task"
            await asyncio.sleep(0.005)
        return self.started[0]


def alive(pid: int) -> bool:
    st = procgroup.proc_stat(pid)
    return st is not None and st.state not in ("Z", "X")


async def _output_and_exit_code_come_through_the_worker() -> None:
    run = Run("echo hello; printf 'x%.0s' $(seq 1 5000); exit 3")
    assert run.task.start() == 0
    result = await asyncio.wait_for(run.task.wait(), 15)
    assert result == TaskExit(3, EXITED, "")
    pid = run.started[0]
    assert pid != run.task.worker_pid and pid > 0
    assert run.out.startswith(b"hello\r\n") and run.out.count(b"x") == 5000
    assert run.task.pty_fd == -1


async def _a_bad_cwd_is_a_start_failure() -> None:
    run = Run("true", cwd="/nonexistent/dir")
    run.task.start()
    result = await asyncio.wait_for(run.task.wait(), 15)
    assert result.exit_code == 127 and "not a directory" in result.reason
    assert len(run.failed) == 1 and not run.started


async def _every_line_of_many_short_tasks_arrives() -> None:
    runs = [Run(f"echo line-{i}") for i in range(40)]
    for run in runs:
        run.task.start()
    results = await asyncio.wait_for(asyncio.gather(*(r.task.wait() for r in runs)), 60)
    assert all(r.exit_code == 0 for r in results)
    for i, run in enumerate(runs):
        assert f"line-{i}\r\n".encode() in run.out


async def _a_killed_worker_loses_the_task_and_kills_its_tree() -> None:
    run = Run("sleep 300 & sleep 301; echo never")
    run.task.start()
    pid = await run.until_started()
    deadline = time.monotonic() + 5
    while len(procgroup.live_members(pid, pid)) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    members = procgroup.live_members(pid, pid)
    assert len(members) >= 3, members
    assert run.task.pty_fd >= 0  # the detector's copy of the master
    os.kill(run.task.worker_pid, signal.SIGKILL)
    result = await asyncio.wait_for(run.task.wait(), 10)
    assert result.kind == LOST and "signal 9" in result.reason
    assert not [p for p in members if alive(p)]
    assert run.task.pty_fd == -1
    # The loop goes on: another task runs.
    other = Run("echo still-here")
    other.task.start()
    assert (await asyncio.wait_for(other.task.wait(), 15)).exit_code == 0
    assert b"still-here" in other.out


async def _the_worker_kills_its_task_when_the_agent_is_gone() -> None:
    run = Run("sleep 300")
    run.task.start()
    pid = await run.until_started()
    worker = run.task.worker_pid
    sock = run.task._sock  # noqa: SLF001 - the agent's end: closing it is "the agent died"
    assert sock is not None
    asyncio.get_running_loop().remove_reader(sock.fileno())
    sock.shutdown(2)
    deadline = time.monotonic() + 10
    while (alive(pid) or alive(worker)) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not alive(pid) and not alive(worker)


async def _cancel_reaches_the_task_through_the_worker() -> None:
    run = Run("sleep 300")
    run.task.start()
    await run.until_started()
    run.task.cancel(node_pb2.FINISH_KIND_CANCELLED, "by test")
    result = await asyncio.wait_for(run.task.wait(), 10)
    assert result.kind == node_pb2.FINISH_KIND_CANCELLED and result.reason == "by test"


async def _input_reaches_the_task() -> None:
    run = Run("read x; echo got-$x")
    run.task.start()
    await run.until_started()
    assert run.task.write_input(b"abc\n")
    await asyncio.wait_for(run.task.wait(), 10)
    assert b"got-abc" in run.out


async def _a_flooding_task_does_not_delay_another_tasks_output() -> None:
    flood = Run("head -c 300000000 /dev/zero")
    flood.task.start()
    await flood.until_started()
    await asyncio.sleep(0.3)  # the flood is in full swing
    quiet = Run("echo quiet-line")
    t0 = time.monotonic()
    quiet.task.start()
    await asyncio.wait_for(quiet.task.wait(), 10)
    latency = quiet.first_output_at - t0
    assert b"quiet-line" in quiet.out
    assert latency < 1.0, f"quiet line after {latency:.3f} s"
    flood.task.kill_now()
    await asyncio.wait_for(flood.task.wait(), 10)


async def _a_slow_agent_bounds_the_worker_and_loses_nothing() -> None:
    size = 30_000_000
    run = Run(f"head -c {size} /dev/zero; echo; echo end-marker")
    loop = asyncio.get_running_loop()
    run.task.start()
    await run.until_started()
    sock = run.task._sock  # noqa: SLF001 - stop reading: the agent is "slow"
    assert sock is not None
    loop.remove_reader(sock.fileno())
    await asyncio.sleep(1.5)
    with open(f"/proc/{run.task.worker_pid}/status") as f:
        rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    assert rss_kb < 100_000, f"worker RSS {rss_kb} kB while the agent did not read"
    loop.add_reader(sock.fileno(), run.task._on_readable)  # noqa: SLF001
    result = await asyncio.wait_for(run.task.wait(), 30)
    assert result.exit_code == 0
    assert run.out.count(b"\0") == size and run.out.endswith(b"end-marker\r\n")


@pytest.fixture(autouse=True)
def _no_leftover_children() -> Iterator[None]:
    yield
    for pid in procgroup.all_pids():
        st = procgroup.proc_stat(pid)
        if st is not None and st.ppid == os.getpid() and st.state == "Z":
            os.waitpid(pid, 0)


def test_output_and_exit_code_come_through_the_worker() -> None:
    run(_output_and_exit_code_come_through_the_worker())


def test_a_bad_cwd_is_a_start_failure() -> None:
    run(_a_bad_cwd_is_a_start_failure())


def test_every_line_of_many_short_tasks_arrives() -> None:
    run(_every_line_of_many_short_tasks_arrives())


def test_a_killed_worker_loses_the_task_and_kills_its_tree() -> None:
    run(_a_killed_worker_loses_the_task_and_kills_its_tree())


def test_the_worker_kills_its_task_when_the_agent_is_gone() -> None:
    run(_the_worker_kills_its_task_when_the_agent_is_gone())


def test_cancel_reaches_the_task_through_the_worker() -> None:
    run(_cancel_reaches_the_task_through_the_worker())


def test_input_reaches_the_task() -> None:
    run(_input_reaches_the_task())


def test_a_flooding_task_does_not_delay_another_tasks_output() -> None:
    run(_a_flooding_task_does_not_delay_another_tasks_output())


def test_a_slow_agent_bounds_the_worker_and_loses_nothing() -> None:
    run(_a_slow_agent_bounds_the_worker_and_loses_nothing())
