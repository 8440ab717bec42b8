"""The PTY task runner against real processes: output, exit codes, input, cancel, cleanup."""

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop

from nodeagent import procgroup
from nodeagent.errors import SpawnError
from nodeagent.runner import CANCELLED, EXITED, TIMED_OUT, RunSpec, TaskExit, TaskProcess

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


async def run_task(spec: RunSpec, *, input_data: bytes = b"", cancel: bool = False,
                   grace_s: float = 0.5) -> tuple[TaskExit, bytes, int]:
    out = bytearray()
    proc = TaskProcess(spec, out.extend, cancel_grace_s=grace_s)
    pid = proc.start()
    if input_data:
        assert proc.write_input(input_data)
    if cancel:
        proc.cancel()
    result = await proc.wait()
    return result, bytes(out), pid


def test_echo_arrives_complete() -> None:
    result, out, pid = run(run_task(RunSpec("echo hello world")))
    assert out == b"hello world\r\n"
    assert result == TaskExit(0, EXITED, "")
    assert procgroup.live_members(pid, pid) == []


def test_large_output_is_drained_completely() -> None:
    result, out, _ = run(run_task(RunSpec("head -c 3000000 /dev/zero | tr '\\0' a")))
    assert result.exit_code == 0
    assert out == b"a" * 3_000_000


def test_every_line_arrives_before_done_200_runs() -> None:
    async def batch(start: int) -> None:
        specs = [RunSpec(f"printf 'line-{i}\\n'; exit 0") for i in range(start, start + 20)]
        runs = [run_task(spec) for spec in specs]
        for i, (result, out, _) in enumerate(await asyncio.gather(*runs), start):
            assert (result.exit_code, out) == (0, f"line-{i}\r\n".encode())

    async def all_batches() -> None:
        for start in range(0, 200, 20):
            await batch(start)

    run(all_batches())


def test_exit_status_and_signal() -> None:
    assert run(run_task(RunSpec("exit 3")))[0].exit_code == 3
    result, _, _ = run(run_task(RunSpec("kill -TERM $$")))
    assert (result.exit_code, result.kind) == (-15, EXITED)


def test_input_is_answered_and_echoed() -> None:
    result, out, _ = run(run_task(RunSpec("read x; echo got $x"), input_data=b"abc\n"))
    assert result.exit_code == 0
    assert b"got abc\r\n" in out
    assert out.count(b"abc") == 2  # the terminal echoes what was typed, as a terminal does


def test_env_defaults_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORTEX_TOKEN_FILE", "/secret")
    spec = RunSpec('echo "$PAGER $GIT_TERMINAL_PROMPT $FOO ${CORTEX_TOKEN_FILE:-unset}"',
                   env={"PAGER": "less", "FOO": "bar"})
    _, out, _ = run(run_task(spec))
    assert out == b"less 0 bar unset\r\n"


def test_cwd_and_dimensions(tmp_path: Path) -> None:
    _, out, _ = run(run_task(RunSpec("pwd; stty size", cwd=str(tmp_path), cols=123, rows=45)))
    assert out == f"{tmp_path}\r\n45 123\r\n".encode()


def test_missing_cwd_fails_to_spawn(tmp_path: Path) -> None:
    async def main() -> None:
        with pytest.raises(SpawnError, match="not a directory"):
            TaskProcess(RunSpec("true", cwd=str(tmp_path / "nope")), lambda _: None).start()
    run(main())


def test_cancel_leaves_no_process_in_group() -> None:
    result, _, pid = run(run_task(RunSpec("sleep 1000"), cancel=True))
    assert result.kind == CANCELLED
    # SIGINT normally ends it (-2, or 130 from the shell); if it lands while the shell is
    # still starting its child, the shell waits it out and the ladder's SIGTERM ends it.
    assert result.exit_code in (-2, 130, -15)
    # /proc, not killpg(pid, 0): an orphan's zombie stays in the group until its new
    # parent reaps it (init here; the agent itself, a subreaper, in production).
    assert procgroup.live_members(pid, pid) == []


def test_cancel_climbs_the_ladder_to_sigkill() -> None:
    spec = RunSpec("trap '' INT TERM; echo ready; while :; do sleep 0.05; done")

    async def main() -> tuple[TaskExit, int]:
        ready = asyncio.Event()
        proc = TaskProcess(spec, lambda d: ready.set() if b"ready" in d else None,
                           cancel_grace_s=0.1)
        pid = proc.start()
        await ready.wait()  # the trap is set before we signal
        proc.cancel()
        return await proc.wait(), pid

    result, pid = run(main())
    assert (result.kind, result.exit_code) == (CANCELLED, -9)
    assert procgroup.live_members(pid, pid) == []


def test_background_daemon_is_killed_when_task_finishes() -> None:
    # The orphan ignores SIGHUP and keeps the slave open: no EIO comes, the quiet drain ends.
    result, out, pid = run(run_task(RunSpec("(trap '' HUP; sleep 1000 &) ; echo hi")))
    assert (result.exit_code, out) == (0, b"hi\r\n")
    assert procgroup.live_members(pid, pid) == []


def test_background_daemon_is_killed_on_cancel() -> None:
    result, _, pid = run(run_task(RunSpec("(sleep 1000 &) ; sleep 1000"), cancel=True))
    assert result.kind == CANCELLED
    assert procgroup.live_members(pid, pid) == []


def test_job_control_jobs_in_other_groups_of_the_session_are_killed() -> None:
    spec = RunSpec("set -m; trap '' HUP; sleep 1000 & echo started; wait")

    async def main() -> tuple[TaskExit, int, list[int]]:
        started = asyncio.Event()
        proc = TaskProcess(spec, lambda d: started.set() if b"started" in d else None,
                           cancel_grace_s=0.2)
        pid = proc.start()
        await started.wait()
        in_session = procgroup.live_members(-1, pid)
        proc.cancel()
        return await proc.wait(), pid, in_session

    result, pid, in_session = run(main())
    assert len(in_session) == 2  # the shell and its job, in a group of its own
    assert result.kind == CANCELLED
    assert procgroup.live_members(pid, pid) == []


def test_timeout_runs_the_ladder() -> None:
    result, _, pid = run(run_task(RunSpec("sleep 1000", timeout_s=0.2)))
    assert result.kind == TIMED_OUT
    assert "timeout" in result.reason
    assert procgroup.live_members(pid, pid) == []


def test_cancel_after_exit_keeps_exited() -> None:
    async def main() -> TaskExit:
        proc = TaskProcess(RunSpec("exit 0"), lambda _: None)
        proc.start()
        result = await proc.wait()
        proc.cancel()
        return result
    assert run(main()).kind == EXITED
