"""A task's worker process: ``python -m nodeagent.worker FD`` (DESIGN.md §5, issue 3 item 1).

The agent starts one worker per task attempt with ``posix_spawn`` (its own session, stdin
``/dev/null``), handing it one end of a socketpair as ``FD``
(:class:`nodeagent.workertask.WorkerTask` is the agent's side). The worker runs the
unchanged :class:`nodeagent.runner.TaskProcess` on its own uvloop: PTY, cgroup placement,
timeouts, the kill ladder and drain-before-done all happen here, so a task that floods,
hangs or exhausts its worker costs the agent one socket, not its event loop.

Invariants:

- Frames (:mod:`nodeagent.workerproto`): ``spec`` in; ``started`` (with the PTY master by
  ``SCM_RIGHTS``) before any ``out``; ``out`` in PTY order; ``exit`` only after the
  task's ``done`` (drained, tree killed, main pid reaped), and it is the last frame.
- Bounded: when more than :data:`HIGH_WATER_BYTES` wait to be sent, the PTY is not read
  (the task blocks on its full terminal) until the backlog falls under
  :data:`LOW_WATER_BYTES`.
- The socket is not inherited by the task. EOF on it, or a changed parent pid, means the
  agent is gone: the task's tree is killed and the worker exits.
"""

import array
import asyncio
import contextlib
import os
import socket
import sys
from pathlib import Path
from typing import Any

import uvloop

from nodeagent.cgroup import TaskCgroup
from nodeagent.errors import SpawnError
from nodeagent.runner import CANCELLED, RunSpec, TaskExit, TaskProcess
from nodeagent.workerproto import FrameError, FrameReader, encode

HIGH_WATER_BYTES = 1024 * 1024
LOW_WATER_BYTES = 256 * 1024
RECV_BYTES = 64 * 1024
PARENT_CHECK_S = 1.0


def spec_frame(spec: RunSpec, *, cancel_grace_s: float, drain_quiet_s: float,
               cgroup: TaskCgroup | None) -> dict[str, Any]:
    return {"t": "spec", "command": spec.command, "env": dict(spec.env), "cwd": spec.cwd,
            "cols": spec.cols, "rows": spec.rows, "timeout_s": spec.timeout_s,
            "idle_timeout_s": spec.idle_timeout_s, "allow_prompts": spec.allow_prompts,
            "prompt_env": dict(spec.prompt_env), "cancel_grace_s": cancel_grace_s,
            "drain_quiet_s": drain_quiet_s,
            "cgroup": {k: str(v) for k, v in cgroup.dirs.items()} if cgroup else None}


class Worker:
    def __init__(self, sock: socket.socket, ppid: int) -> None:
        self._sock = sock
        self._ppid = ppid
        self._loop = asyncio.get_running_loop()
        self._reader = FrameReader()
        self._out = bytearray()
        self._writing = False
        self._proc: TaskProcess | None = None
        self._agent_gone = asyncio.Event()
        self._drained = asyncio.Event()
        self._early: list[dict[str, Any]] = []

    async def run(self) -> int:
        spec = await self._read_spec()
        if spec is None:
            return 0
        cg = spec.get("cgroup")
        cgroup = TaskCgroup({k: Path(v) for k, v in cg.items()}) if cg else None
        run = RunSpec(command=spec["command"], env=spec["env"], cwd=spec["cwd"],
                      cols=spec["cols"], rows=spec["rows"], timeout_s=spec["timeout_s"],
                      idle_timeout_s=spec["idle_timeout_s"],
                      allow_prompts=spec["allow_prompts"], prompt_env=spec["prompt_env"])
        proc = self._proc = TaskProcess(run, self._on_output,
                                        cancel_grace_s=spec["cancel_grace_s"],
                                        drain_quiet_s=spec["drain_quiet_s"], cgroup=cgroup)
        try:
            pid = proc.start()
        except SpawnError as e:
            self._send({"t": "error", "reason": str(e)})
            await self._flush()
            return 0
        frame = encode({"t": "started", "pid": pid})
        sent = self._sock.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                             array.array("i", [proc.pty_fd]))])
        self._out += frame[sent:]
        self._handle(self._early)
        self._loop.add_reader(self._sock.fileno(), self._on_readable)
        watch = self._loop.create_task(self._watch_parent())
        result: TaskExit = await proc.wait()
        watch.cancel()
        if self._agent_gone.is_set():
            return 0
        self._loop.remove_reader(self._sock.fileno())
        self._send({"t": "exit", "code": result.exit_code, "kind": result.kind,
                    "reason": result.reason})
        await self._flush()
        return 0

    async def _read_spec(self) -> dict[str, Any] | None:
        while True:
            data = await self._loop.sock_recv(self._sock, RECV_BYTES)
            if not data:
                return None
            frames = self._reader.feed(data)
            if frames:
                if frames[0]["t"] != "spec":
                    raise FrameError("the first frame must be the spec")
                self._early = frames[1:]  # cancel or input sent right after the spec
                return frames[0]

    # ---- agent → worker ---------------------------------------------------

    def _on_readable(self) -> None:
        try:
            data = self._sock.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._lost_agent()
            return
        self._handle(self._reader.feed(data))

    def _handle(self, frames: list[dict[str, Any]]) -> None:
        assert self._proc is not None
        for msg in frames:
            t = msg["t"]
            if t == "in":
                if not self._proc.write_input(msg["d"]):
                    print("nodeagent.worker: input dropped", file=sys.stderr)
            elif t == "cancel":
                self._proc.cancel(msg["kind"], msg["reason"])
            elif t == "kill":
                self._proc.kill_now(msg["kind"], msg["reason"])

    def _lost_agent(self) -> None:
        if not self._agent_gone.is_set():
            self._agent_gone.set()
            self._drained.set()
            self._loop.remove_reader(self._sock.fileno())
            if self._writing:
                self._writing = False
                self._loop.remove_writer(self._sock.fileno())
            if self._proc is not None:
                self._proc.kill_now(CANCELLED, "agent gone")

    async def _watch_parent(self) -> None:
        while os.getppid() == self._ppid:
            await asyncio.sleep(PARENT_CHECK_S)
        self._lost_agent()

    # ---- worker → agent ---------------------------------------------------

    def _on_output(self, data: bytes) -> None:
        self._send({"t": "out", "d": data})
        if len(self._out) > HIGH_WATER_BYTES and self._proc is not None:
            self._proc.pause_reading()

    def _send(self, msg: dict[str, Any]) -> None:
        if self._agent_gone.is_set():
            return
        self._out += encode(msg)
        if not self._writing:
            self._on_writable()

    def _on_writable(self) -> None:
        try:
            sent = self._sock.send(self._out)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._out.clear()
            self._lost_agent()
            sent = 0
        del self._out[:sent]
        if not self._out:
            self._drained.set()
        if self._out and not self._writing:
            self._writing = True
            self._loop.add_writer(self._sock.fileno(), self._on_writable)
        elif not self._out and self._writing:
            self._writing = False
            self._loop.remove_writer(self._sock.fileno())
        if len(self._out) < LOW_WATER_BYTES and self._proc is not None:
            self._proc.resume_reading()

    async def _flush(self) -> None:
        while self._out and not self._agent_gone.is_set():
            self._drained.clear()
            if not self._writing:
                self._on_writable()
            if self._out:
                await self._drained.wait()


def main(argv: list[str]) -> int:
    fd = int(argv[0])
    os.set_inheritable(fd, False)  # the task must not hold the agent's channel
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    ppid = os.getppid()

    async def run() -> int:
        return await Worker(sock, ppid).run()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            return runner.run(run())
        finally:
            with contextlib.suppress(OSError):
                sock.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
