"""One task attempt's process in a PTY (DESIGN.md §5; docs/protocol.md, "Running").

``/bin/sh -c command`` is spawned on a new PTY in its own session and process group
(:mod:`nodeagent.ptyspawn`), so its pid names both. Invariants:

- Every byte read from the PTY master goes to ``on_output`` in order, before anything else
  learns of it; the master is read non-blocking from the event loop.
- The main process is *not* reaped when it exits: its exit status is peeked with
  ``waitid(WNOWAIT)`` (the pidfd says when), the PTY is drained (until EIO; or, when a
  leftover process keeps the slave open, until ``drain_quiet_s`` passes without output),
  every leftover process of the group and session is SIGKILLed, and only then is the main
  pid reaped. Until that reap the pid cannot be reused, so the group id stays ours.
- ``done`` resolves once, after the drain, the cleanup and the reap: nothing of the task
  is left running and no output is still in the PTY.
- Cancel and timeout run the same ladder on the whole group: SIGINT, wait the grace,
  SIGTERM, wait the grace, SIGKILL. The first reason to end wins (``kind``).
- With a task cgroup (:mod:`nodeagent.cgroup`) the group, the session *and* the cgroup
  are signalled, so a process that left the session (``setsid``) is reached too; the
  cgroup is emptied before the main pid is reaped and removed after. Hard and idle
  timeouts (:mod:`nodeagent.timeouts`) end the task as ``TIMED_OUT`` with their reason.
"""

import asyncio
import contextlib
import errno
import os
import signal
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from cortex.v1 import node_pb2
from nodeagent import procgroup
from nodeagent.cgroup import TaskCgroup
from nodeagent.errors import SpawnError
from nodeagent.ptyspawn import spawn_in_pty
from nodeagent.timeouts import Deadlines

READ_CHUNK_BYTES = 64 * 1024
READS_PER_WAKEUP = 16  # a chatty task yields the loop after this many reads
MAX_PENDING_INPUT_BYTES = 1024 * 1024
DEFAULT_ENV = {
    "PAGER": "cat",
    "GIT_PAGER": "cat",
    "GIT_TERMINAL_PROMPT": "0",
    "DEBIAN_FRONTEND": "noninteractive",
    "PIP_NO_INPUT": "1",
    "MANPAGER": "cat",
    "SYSTEMD_PAGER": "cat",
    "GH_PAGER": "cat",
    "GH_PROMPT_DISABLED": "1",
    "AWS_PAGER": "",
}
EXITED = node_pb2.FINISH_KIND_EXITED
CANCELLED = node_pb2.FINISH_KIND_CANCELLED
TIMED_OUT = node_pb2.FINISH_KIND_TIMED_OUT


@dataclass(frozen=True, slots=True)
class RunSpec:
    command: str
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str = ""
    cols: int = 200
    rows: int = 50
    timeout_s: float = 0.0
    idle_timeout_s: float = 0.0
    allow_prompts: bool = False  # True: no prompt-preventing defaults (DEFAULT_ENV)
    prompt_env: Mapping[str, str] = field(default_factory=dict)  # nonce'd markers (detect)


@dataclass(frozen=True, slots=True)
class TaskExit:
    exit_code: int  # exit status, or -N when killed by signal N
    kind: int  # a node_pb2.FinishKind value
    reason: str = ""


def task_env(spec_env: Mapping[str, str], base: Mapping[str, str] | None = None, *,
             allow_prompts: bool = False,
             prompt_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The agent's environment minus its own ``CORTEX_*`` settings, the prompt-preventing
    defaults (unless ``allow_prompts``), the prompt markers, then the task's own variables
    (which win)."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if not k.startswith("CORTEX_")}
    if not allow_prompts:
        env.update(DEFAULT_ENV)
    env.update(prompt_env or {})
    env.update(spec_env)
    return env


class TaskProcess:
    def __init__(self, spec: RunSpec, on_output: Callable[[bytes], None], *,
                 cancel_grace_s: float = 2.0, drain_quiet_s: float = 0.1,
                 drain_cap_s: float = 2.0, cgroup: TaskCgroup | None = None) -> None:
        self.spec = spec
        self.cgroup = cgroup
        self._on_output = on_output
        self._grace_s = cancel_grace_s
        self._quiet_s = drain_quiet_s
        self._drain_cap_s = drain_cap_s
        self._loop = asyncio.get_running_loop()
        self.pid = 0
        self._fd = -1
        self._pidfd = -1
        self._pty_eof = False
        self._paused = False
        self._activity = asyncio.Event()
        self._last_output = 0.0
        self._exited = asyncio.Event()
        self._exit_code = 0
        self._kind: int = EXITED
        self._reason = ""
        self._pending_input = bytearray()
        self._deadlines = Deadlines(self._loop, hard_s=spec.timeout_s,
                                    idle_s=spec.idle_timeout_s,
                                    last_output=lambda: self._last_output,
                                    expire=lambda reason: self.cancel(TIMED_OUT, reason))
        self._tasks: set[asyncio.Task[None]] = set()
        self.done: asyncio.Future[TaskExit] = self._loop.create_future()

    def start(self) -> int:
        """Spawn the process and start watching it; returns its pid (= pgid = sid)."""
        if self.spec.cwd and not os.path.isdir(self.spec.cwd):
            raise SpawnError(f"cannot start task: cwd {self.spec.cwd!r} is not a directory")
        try:
            self.pid, self._fd = spawn_in_pty(
                self.spec.command,
                task_env(self.spec.env, allow_prompts=self.spec.allow_prompts,
                         prompt_env=self.spec.prompt_env), cwd=self.spec.cwd,
                rows=self.spec.rows or 50, cols=self.spec.cols or 200,
                cgroup_procs=self.cgroup.procs_files if self.cgroup else ())
        except OSError as e:
            raise SpawnError(f"cannot start task: {e}") from e
        os.set_blocking(self._fd, False)
        self._loop.add_reader(self._fd, self._on_readable)
        self._pidfd = os.pidfd_open(self.pid)
        self._loop.add_reader(self._pidfd, self._on_pidfd)
        self._deadlines.start()
        return self.pid

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    @property
    def pty_fd(self) -> int:
        """The PTY master while it is open, else -1 (for the prompt detector's kernel check)."""
        return self._fd

    async def wait(self) -> TaskExit:
        return await asyncio.shield(self.done)

    # ---- requests ---------------------------------------------------------

    def cancel(self, kind: int = CANCELLED, reason: str = "cancelled") -> None:
        """Start the SIGINT → SIGTERM → SIGKILL ladder unless the task is already ending."""
        if self._exited.is_set() or self._kind != EXITED:
            return
        self._kind, self._reason = kind, reason
        self._spawn(self._ladder())

    def kill_now(self, kind: int = CANCELLED, reason: str = "killed") -> None:
        """SIGKILL the whole group and session at once (second signal, KILL verdict)."""
        if self._kind == EXITED and not self._exited.is_set():
            self._kind, self._reason = kind, reason
        if self.pid and not self.done.done():
            self._signal_tree(signal.SIGKILL)

    def write_input(self, data: bytes) -> bool:
        """Queue ``data`` for the PTY; False when the task is gone or the queue is full."""
        if self._fd < 0 or len(self._pending_input) + len(data) > MAX_PENDING_INPUT_BYTES:
            return False
        was_empty = not self._pending_input
        self._pending_input += data
        if was_empty:
            self._flush_input()
        return True

    def pause_reading(self) -> None:
        """Stop reading the PTY (back-pressure: the task blocks once its buffer is full)."""
        if not self._paused and self._fd >= 0 and not self._pty_eof:
            self._paused = True
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            if self._fd >= 0 and not self._pty_eof:
                self._loop.add_reader(self._fd, self._on_readable)

    # ---- event-loop callbacks ---------------------------------------------

    def _on_readable(self) -> bool:
        """Read what is there (bounded per call); True when more may be waiting."""
        for _ in range(READS_PER_WAKEUP):
            try:
                data = os.read(self._fd, READ_CHUNK_BYTES)
            except BlockingIOError:
                return False
            except OSError as e:
                # EIO: every slave fd is closed (Linux). Buffered bytes were read before it.
                if e.errno != errno.EIO:
                    self._reason = self._reason or f"pty read failed: {e.strerror}"
                self._set_eof()
                return False
            if not data:
                self._set_eof()
                return False
            self._last_output = self._loop.time()
            self._activity.set()
            self._on_output(data)
        return True

    def _set_eof(self) -> None:
        if not self._pty_eof:
            self._pty_eof = True
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._pending_input.clear()
            self._activity.set()

    def _flush_input(self) -> None:
        try:
            written = os.write(self._fd, self._pending_input)
        except BlockingIOError:
            written = 0
        except OSError:
            self._pending_input.clear()
            self._loop.remove_writer(self._fd)
            return
        del self._pending_input[:written]
        if self._pending_input:
            self._loop.add_writer(self._fd, self._flush_input)
        else:
            self._loop.remove_writer(self._fd)

    def _on_pidfd(self) -> None:
        try:
            # WNOWAIT: leave the zombie in place so the pid (our group id) is not reused
            # before the leftovers of the group are killed.
            res = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            res = None
            self._exit_code, self._reason = -1, self._reason or "exit status lost"
        else:
            if res is None:
                return  # spurious wakeup
            code = res.si_status
            self._exit_code = code if res.si_code == os.CLD_EXITED else -code
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        self._deadlines.stop()
        self._exited.set()
        self._spawn(self._finish(reap=res is not None))

    # ---- coroutines -------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ladder(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            if self._exited.is_set():
                return
            self._signal_tree(sig)
            if sig == signal.SIGKILL:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exited.wait(), self._grace_s)

    async def _drain(self) -> None:
        exited_at = self._loop.time()
        deadline = exited_at + self._drain_cap_s
        while not self._pty_eof:
            now = self._loop.time()
            quiet_until = max(self._last_output, exited_at) + self._quiet_s
            if now >= quiet_until or now >= deadline:
                return  # something still holds the slave open; it is killed next
            self._activity.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._activity.wait(), min(quiet_until, deadline) - now)

    async def _finish(self, reap: bool) -> None:
        try:
            await self._drain()
            leftovers = procgroup.live_members(self.pid, self.pid)
            if self.cgroup is not None:
                leftovers = sorted({*leftovers, *self.cgroup.pids()})
            if leftovers:
                self._signal_tree(signal.SIGKILL)
                await procgroup.wait_gone(leftovers, timeout_s=2.0)
            if self.cgroup is not None:
                await self._empty_cgroup(self.cgroup)
            while not self._pty_eof and self._on_readable():
                pass  # what the leftovers wrote before they died
        finally:
            self._close_pty()
            if reap:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self.pid, os.WNOHANG)
            self._release_cgroup()
            if not self.done.done():
                self.done.set_result(TaskExit(self._exit_code, self._kind, self._reason))

    def _signal_tree(self, sig: int) -> None:
        procgroup.signal_task(self.pid, sig, sid=self.pid)
        if self.cgroup is not None:
            self.cgroup.signal(sig, except_session=self.pid)

    @staticmethod
    async def _empty_cgroup(cgroup: TaskCgroup) -> None:
        """Kill until nothing is left (a process forked after the list was read)."""
        for _ in range(10):
            pids = cgroup.pids()
            if not pids:
                return
            cgroup.kill()
            await procgroup.wait_gone(pids, timeout_s=1.0)

    def _release_cgroup(self) -> None:
        if self.cgroup is None:
            return
        if self.cgroup.oom_kills() and not self._reason:
            self._reason = "out of memory: killed at the task's memory limit"
        self.cgroup.remove()

    def _close_pty(self) -> None:
        if self._fd >= 0:
            self._set_eof()
            os.close(self._fd)
            self._fd = -1
