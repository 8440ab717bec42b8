"""The agent's side of a task run in its own worker process (:mod:`nodeagent.worker`).

:class:`WorkerTask` offers what the task host uses of :class:`nodeagent.runner.TaskProcess`
(``start``, ``done``/``wait``, ``cancel``, ``kill_now``, ``write_input``, ``pty_fd``,
``exited``, ``pid``), except that the task's pid is known only when the worker reports
``started``: :meth:`start` returns at once and ``on_started(pid)`` is called then (before
any output is delivered), or ``on_start_failed(error)`` when the task could not start.

Invariants:

- Output reaches ``on_output`` in the worker's order; the socket is read to its end
  before the worker's death is acted on, so nothing it sent is lost.
- If the worker dies without its ``exit`` frame (crash, SIGKILL, OOM), the task's group,
  session and cgroup are SIGKILLed from here, and ``done`` resolves with ``LOST`` and the
  worker's fate as reason. The task's main pid is in :attr:`reaped_pids` until then, so
  the orphan reaper cannot free its group id while it is being killed.
- A worker that does not end after ``kill_now`` (or well after the task's hard timeout)
  is SIGKILLed, and the above applies.
"""

import array
import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import nodeagent
from cortex.v1 import node_pb2
from nodeagent import procgroup
from nodeagent.cgroup import TaskCgroup
from nodeagent.errors import SpawnError
from nodeagent.ptyspawn import RESET_SIGNALS
from nodeagent.runner import EXITED, MAX_PENDING_INPUT_BYTES, RunSpec, TaskExit
from nodeagent.worker import spec_frame
from nodeagent.workerproto import FrameError, FrameReader, encode

LOST = node_pb2.FINISH_KIND_LOST
RECV_BYTES = 64 * 1024
READS_PER_WAKEUP = 16
SOCKET_BUFFER_BYTES = 256 * 1024
KILL_FALLBACK_S = 2.0  # after kill_now, a worker still alive this long is SIGKILLed
HARD_TIMEOUT_SLACK_S = 10.0
_PKG_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(nodeagent.__file__)))
_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); from nodeagent.worker import main; "
         "sys.exit(main(sys.argv[2:]))")


def _fate(status: int | None) -> str:
    if status is None:
        return "worker process died"
    if os.WIFSIGNALED(status):
        return f"worker process killed by signal {os.WTERMSIG(status)}"
    return f"worker process exited with status {os.waitstatus_to_exitcode(status)}"


class WorkerTask:
    def __init__(self, spec: RunSpec, on_output: Callable[[bytes], None], *,
                 on_started: Callable[[int], None],
                 on_start_failed: Callable[[SpawnError], None],
                 cancel_grace_s: float = 2.0, drain_quiet_s: float = 0.1,
                 cgroup: TaskCgroup | None = None) -> None:
        self.spec = spec
        self.cgroup = cgroup
        self._on_output = on_output
        self._on_started = on_started
        self._on_start_failed = on_start_failed
        self._grace_s = cancel_grace_s
        self._first = spec_frame(spec, cancel_grace_s=cancel_grace_s,
                                 drain_quiet_s=drain_quiet_s, cgroup=cgroup)
        self._loop = asyncio.get_running_loop()
        self.pid = 0  # the task's session leader, once started
        self.worker_pid = 0
        self._sock: socket.socket | None = None
        self._pidfd = -1
        self._master = -1
        self._reader = FrameReader()
        self._out = bytearray()
        self._writing = False
        self._worker_status: int | None = None
        self._ending = False
        self._timers: list[asyncio.TimerHandle] = []
        self.done: asyncio.Future[TaskExit] = self._loop.create_future()

    # ---- the interface of TaskProcess -------------------------------------

    def start(self) -> int:
        """Spawn the worker and hand it the spec; 0 (the task's pid comes later)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            for s in (ours, theirs):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
            os.set_inheritable(theirs.fileno(), True)
            self.worker_pid = os.posix_spawn(
                sys.executable,
                [sys.executable, "-c", _BOOT, _PKG_ROOT, str(theirs.fileno())], os.environ,
                file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)],
                setsid=True, setsigmask=(), setsigdef=RESET_SIGNALS)
        except OSError as e:
            ours.close()
            raise SpawnError(f"cannot start task worker: {e}") from e
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._pidfd = os.pidfd_open(self.worker_pid)
        self._loop.add_reader(self._pidfd, self._on_worker_exit)
        self._loop.add_reader(ours.fileno(), self._on_readable)
        self._send(self._first)
        if self.spec.timeout_s > 0:  # backstop for a worker too stuck to run its own timer
            self._timers.append(self._loop.call_later(
                self.spec.timeout_s + 3 * self._grace_s + HARD_TIMEOUT_SLACK_S,
                self._kill_worker))
        return 0

    @property
    def exited(self) -> bool:
        return self.done.done()

    @property
    def pty_fd(self) -> int:
        """The task's PTY master (a copy the worker passed), or -1."""
        return self._master

    @property
    def reaped_pids(self) -> set[int]:
        """Pids this object reaps or guards; the orphan reaper must leave them alone."""
        return {p for p in (self.pid, self.worker_pid) if p}

    async def wait(self) -> TaskExit:
        return await asyncio.shield(self.done)

    def cancel(self, kind: int = node_pb2.FINISH_KIND_CANCELLED,
               reason: str = "cancelled") -> None:
        if not self.done.done():
            self._send({"t": "cancel", "kind": kind, "reason": reason})

    def kill_now(self, kind: int = node_pb2.FINISH_KIND_CANCELLED,
                 reason: str = "killed") -> None:
        if self.done.done():
            return
        self._send({"t": "kill", "kind": kind, "reason": reason})
        self._timers.append(self._loop.call_later(KILL_FALLBACK_S, self._kill_worker))

    def write_input(self, data: bytes) -> bool:
        if self.done.done() or self._ending or len(self._out) > MAX_PENDING_INPUT_BYTES:
            return False
        self._send({"t": "in", "d": data})
        return True

    # ---- the socket ---------------------------------------------------------

    def _send(self, msg: dict[str, Any]) -> None:
        if self._sock is None or self._ending:
            return
        self._out += encode(msg)
        if not self._writing:
            self._on_writable()

    def _on_writable(self) -> None:
        assert self._sock is not None
        try:
            sent = self._sock.send(self._out)
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = len(self._out)  # the worker is gone; its exit is handled by the reader
        del self._out[:sent]
        if self._out and not self._writing:
            self._writing = True
            self._loop.add_writer(self._sock.fileno(), self._on_writable)
        elif not self._out and self._writing:
            self._writing = False
            self._loop.remove_writer(self._sock.fileno())

    def _on_readable(self) -> None:
        for _ in range(READS_PER_WAKEUP):
            if not self._read_once():
                return

    def _read_once(self) -> bool:
        """One read; False when nothing more is there now (or ever)."""
        if self._sock is None:
            return False
        try:
            data, anc, _, _ = self._sock.recvmsg(
                RECV_BYTES, socket.CMSG_SPACE(4 * array.array("i").itemsize),
                socket.MSG_CMSG_CLOEXEC)
        except BlockingIOError:
            return False
        except OSError:
            data, anc = b"", []
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(raw[:len(raw) - len(raw) % fds.itemsize])
                for fd in fds:
                    if self._master < 0:
                        self._master = fd
                    else:
                        os.close(fd)
        if not data:
            self._channel_closed()
            return False
        try:
            frames = self._reader.feed(data)
        except FrameError:
            self._kill_worker()
            self._channel_closed()
            return False
        for msg in frames:
            self._dispatch(msg)
        return self._sock is not None

    def _dispatch(self, msg: dict[str, Any]) -> None:
        t = msg["t"]
        if t == "out":
            self._on_output(msg["d"])
        elif t == "started":
            self.pid = int(msg["pid"])
            self._on_started(self.pid)
        elif t == "exit":
            self._end(TaskExit(int(msg["code"]), int(msg["kind"]), str(msg["reason"])))
        elif t == "error":
            err = SpawnError(str(msg["reason"]))
            self._on_start_failed(err)
            self._end(TaskExit(127, EXITED, str(err)))

    def _on_worker_exit(self) -> None:
        """The worker process ended: read what it sent, then act on its death."""
        try:
            res = os.waitid(os.P_PID, self.worker_pid, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            res = None
        else:
            if res is None:
                return  # spurious
            self._worker_status = (res.si_status << 8 if res.si_code == os.CLD_EXITED
                                   else res.si_status)
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        while self._read_once():
            pass
        if self._sock is not None:  # no EOF yet: it cannot come from a dead worker later
            self._channel_closed()

    def _channel_closed(self) -> None:
        self._close_socket()
        if not self.done.done() and not self._ending:
            self._ending = True
            self._loop.create_task(self._lost())

    async def _lost(self) -> None:
        if self._pidfd >= 0:  # the socket closed first; give the worker a moment to exit
            with contextlib.suppress(TimeoutError):
                await procgroup.wait_gone([self.worker_pid], timeout_s=1.0)
        reason = _fate(self._worker_status)
        if not self.pid:
            err = SpawnError(f"cannot start task: {reason}")
            self._on_start_failed(err)
            self._finish(TaskExit(127, EXITED, str(err)))
            return
        try:
            leftovers = procgroup.live_members(self.pid, self.pid)
            if self.cgroup is not None:
                leftovers = sorted({*leftovers, *self.cgroup.pids()})
            procgroup.signal_task(self.pid, signal.SIGKILL, sid=self.pid)
            if self.cgroup is not None:
                self.cgroup.kill()
            await procgroup.wait_gone(leftovers, timeout_s=2.0)
            if self.cgroup is not None:
                self.cgroup.kill()
                self.cgroup.remove()
        finally:
            self._finish(TaskExit(-signal.SIGKILL, LOST, f"{reason}; task killed"))

    def _end(self, result: TaskExit) -> None:
        """The worker's ``exit``: it finished everything; the rest is its own exit."""
        self._ending = True
        self._close_socket()
        self._finish(result)

    def _finish(self, result: TaskExit) -> None:
        for timer in self._timers:
            timer.cancel()
        if self._master >= 0:
            os.close(self._master)
            self._master = -1
        if not self.done.done():
            self.done.set_result(result)

    def _kill_worker(self) -> None:
        if self._pidfd >= 0:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            if self._writing:
                self._loop.remove_writer(self._sock.fileno())
                self._writing = False
            self._sock.close()
            self._sock = None
            self._out.clear()
