"""Interactive shells for agents (shell.proto): a long-lived bash in a PTY task, driven
one command at a time without polling.

A shell is a task whose command starts an interactive bash with no echo and no
``\\n → \\r\\n`` translation (``stty -echo -onlcr``), no readline, an empty ``PS1``, and the
node's nonce'd prompt marker in ``PROMPT_COMMAND`` (the node sets it for every task,
``nodeagent/detect/markers.py``). Each marker reaches the hub as a prompt event
(``shell_ready``, detector ``marker``) carrying ``$?``, ``$PWD`` and the output offset just
past it. Exec, on the hub's own watcher feed (``Hub.watchers``, the same events Watch
streams, so it works across hosts too):

1. the shell must be at a prompt: its last prompt event is a marker and no exec of ours
   is still waiting for a later one (a timed-out command may still run);
2. the command is typed (``SendInput``); several lines go as one ``{ …; }`` group, so one
   marker ends them all;
3. the next marker past the previous one ends it; once the output up to it is durable,
   the bytes between the two markers, less the marker itself, are the command's output.

One exec at a time per shell (another gets ``FAILED_PRECONDITION``); a command that
outlives the exec's timeout gets ``ABORTED`` (not ``DEADLINE_EXCEEDED``: the hub answered,
the command did not) and the shell refuses the next exec until its prompt returns. Output
returned is capped at :data:`MAX_OUTPUT_BYTES` (the rest stays in the task's output).
The last prompt is memory-only on the hub, so after a hub restart a shell answers Exec
again only once it prints a new prompt (type into it, or open another).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import grpc

from cortex.ids import ENV_NAME_RE, check_labels, is_node_id, new_task_id
from cortex.v1 import node_pb2, shell_pb2, shell_pb2_grpc
from cortexd.control.errors import RequestError
from cortexd.control.hub import Hub
from cortexd.control.state import now_ms
from cortexd.control.watchers import Watcher
from cortexd.lifecycle import State
from cortexd.store import TaskRow

SHELL_COMMAND = ("stty -echo -onlcr 2>/dev/null; "
                 "exec bash --norc --noprofile --noediting -i")
SHELL_ENV = {"PS1": "", "PS2": "", "HISTFILE": "/dev/null"}
MAX_OUTPUT_BYTES = 1 << 20
MAX_COMMAND_BYTES = 64 << 10
DEFAULT_EXEC_TIMEOUT_S = 60
MAX_EXEC_TIMEOUT_S = 3600
DEFAULT_READY_TIMEOUT_S = 60
READ_CHUNK_BYTES = 256 << 10
CLOSE_WAIT_S = 30.0
STORE_RECHECK_S = 0.5  # waiting for durable output: re-read the store at least this often
_MARKER_TAIL_RE = re.compile(rb"\x1b\]1337;CortexPrompt=[^\x07\x1b]*(?:\x07|\x1b\\)\Z")
Ctx = grpc.aio.ServicerContext[Any, Any]


def wrap_command(command: str) -> bytes:
    """What is typed: one line as it is; several as one group, so one prompt ends them."""
    text = command.rstrip("\n")
    if "\n" in text:
        text = "{\n" + text + "\n}"
    return (text + "\n").encode()


def strip_marker(data: bytes) -> bytes:
    """The command's output: the bytes before the prompt marker that ended it."""
    return _MARKER_TAIL_RE.sub(b"", data)


def marker_bytes(ev: node_pb2.PromptEvent) -> int:
    """The marker's length in the output: ESC ] body BEL (the excerpt is its body)."""
    return len(ev.excerpt) + 3


def is_marker(ev: node_pb2.PromptEvent | None) -> bool:
    return ev is not None and ev.kind == "shell_ready" and ev.detector == "marker"


class ShellError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class ShellService(shell_pb2_grpc.ShellServicer):
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._busy: set[str] = set()  # shells running an exec of ours now
        self._pending: dict[str, int] = {}  # shell -> marker offset its timed-out exec follows

    async def _abort(self, context: Ctx, e: ShellError | RequestError) -> None:
        if isinstance(e, RequestError):
            await context.abort(getattr(grpc.StatusCode, e.code), str(e))
        else:
            await context.abort(e.code, str(e))

    # ---- Open / Close -------------------------------------------------------

    async def Open(self, request: shell_pb2.OpenShellRequest,  # noqa: N802
                   context: Ctx) -> shell_pb2.ShellInfo:
        try:
            task = await self._open(request)
            ready = await self._wait_ready(task, request.ready_timeout_s
                                           or DEFAULT_READY_TIMEOUT_S)
        except (ShellError, RequestError) as e:
            await self._abort(context, e)
            raise
        return shell_pb2.ShellInfo(shell_id=ready.task_id, node_id=ready.node_id,
                                   state=ready.state.value, cwd=self._cwd(ready))

    async def _open(self, request: shell_pb2.OpenShellRequest) -> TaskRow:
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        if request.node_id and not is_node_id(request.node_id):
            raise ShellError(invalid, f"node_id {request.node_id!r} is not a valid node id")
        if (err := check_labels(dict(request.selector), "selector")) is not None:
            raise ShellError(invalid, err)
        for name in request.env:
            if not ENV_NAME_RE.fullmatch(name):
                raise ShellError(invalid, f"environment variable name {name!r} is not valid")
        if request.cwd and not request.cwd.startswith("/"):
            raise ShellError(invalid, "cwd must be an absolute path")
        now = now_ms()
        row = TaskRow(task_id=new_task_id(), command=SHELL_COMMAND,
                      env={**dict(request.env), **SHELL_ENV}, cwd=request.cwd,
                      timeout_s=request.timeout_s, idle_timeout_s=request.idle_timeout_s,
                      selector=dict(request.selector), node_pin=request.node_id,
                      created_ms=now, updated_ms=now)
        task, _ = await self.hub.tasks.submit(row)
        return task

    async def _wait_ready(self, task: TaskRow, timeout_s: float) -> TaskRow:
        """Until the shell's first prompt; the task as it is then."""
        watcher = self._watch(task.task_id)
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    task = await self.hub.tasks.get(task.task_id)
                    if task.state.terminal:
                        raise ShellError(grpc.StatusCode.FAILED_PRECONDITION,
                                         f"shell {task.task_id} ended: {task.state.value} "
                                         f"{task.reason}".rstrip())
                    if is_marker(self.hub.state.last_prompt(task.task_id, task.attempt)):
                        return task
                    await watcher.queue.get()
        except TimeoutError:
            raise ShellError(grpc.StatusCode.ABORTED,
                             f"shell {task.task_id} showed no prompt within {timeout_s:g} s "
                             f"(state {task.state.value}); it keeps starting") from None
        finally:
            self.hub.state.watchers.remove(watcher)

    async def Close(self, request: shell_pb2.CloseShellRequest,  # noqa: N802
                    context: Ctx) -> shell_pb2.ShellInfo:
        try:
            task = await self.hub.tasks.get(request.shell_id)
            watcher = self._watch(task.task_id)
            try:
                if not task.state.terminal:
                    task = await self.hub.tasks.cancel(task.task_id, "shell closed")
                async with asyncio.timeout(CLOSE_WAIT_S):  # until it has ended
                    while not task.state.terminal:
                        await watcher.queue.get()
                        task = await self.hub.tasks.get(task.task_id)
            except TimeoutError:
                pass  # cancel goes on on the node; say where it stands
            finally:
                self.hub.state.watchers.remove(watcher)
        except (ShellError, RequestError) as e:
            await self._abort(context, e)
            raise
        self._pending.pop(task.task_id, None)
        return shell_pb2.ShellInfo(shell_id=task.task_id, node_id=task.node_id,
                                   state=task.state.value)

    def _cwd(self, task: TaskRow) -> str:
        ev = self.hub.state.last_prompt(task.task_id, task.attempt)
        return ev.cwd if is_marker(ev) and ev is not None else ""

    def _watch(self, task_id: str) -> Watcher:
        watcher = self.hub.state.watchers.add(task_id)
        if watcher is None:
            raise ShellError(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many watchers")
        return watcher

    # ---- Exec ---------------------------------------------------------------

    async def Exec(self, request: shell_pb2.ShellExecRequest,  # noqa: N802
                   context: Ctx) -> shell_pb2.ShellExecResult:
        shell_id = request.shell_id
        if shell_id in self._busy:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"shell {shell_id} is running a command")
        self._busy.add(shell_id)
        try:
            return await self._exec(request)
        except (ShellError, RequestError) as e:
            await self._abort(context, e)
            raise
        finally:
            self._busy.discard(shell_id)

    async def _exec(self, request: shell_pb2.ShellExecRequest) -> shell_pb2.ShellExecResult:
        if not request.command.strip() or len(request.command.encode()) > MAX_COMMAND_BYTES:
            raise ShellError(grpc.StatusCode.INVALID_ARGUMENT,
                             f"command must be 1 to {MAX_COMMAND_BYTES} bytes")
        timeout_s = min(request.timeout_s or DEFAULT_EXEC_TIMEOUT_S, MAX_EXEC_TIMEOUT_S)
        task = await self.hub.tasks.get(request.shell_id)
        watcher = self._watch(task.task_id)  # before the prompt is read: nothing is missed
        try:
            start = self._ready_at(task)
            await self.hub.tasks.send_input(task.task_id, wrap_command(request.command))
            try:
                async with asyncio.timeout(timeout_s):
                    end = await self._next_marker(watcher, task, start)
                    data = await self._durable(watcher, task, start.offset, end.offset)
            except TimeoutError:
                self._pending[task.task_id] = start.offset
                raise ShellError(grpc.StatusCode.ABORTED,
                                 f"the command did not finish within {timeout_s} s; it may "
                                 f"still run (the shell answers Exec after its next "
                                 f"prompt; `cortexctl input` reaches it)") from None
        finally:
            self.hub.state.watchers.remove(watcher)
        output = strip_marker(data)
        total = max(0, end.offset - start.offset - marker_bytes(end))
        return shell_pb2.ShellExecResult(
            exit_code=end.exit_code, output=output[:MAX_OUTPUT_BYTES], output_bytes=total,
            truncated=total > MAX_OUTPUT_BYTES, cwd=end.cwd, start_offset=start.offset,
            end_offset=end.offset)

    def _ready_at(self, task: TaskRow) -> node_pb2.PromptEvent:
        """The prompt the shell waits at, or why it cannot take a command now."""
        if task.state is not State.RUNNING:
            raise ShellError(grpc.StatusCode.FAILED_PRECONDITION,
                             f"shell {task.task_id} is {task.state.value}")
        ev = self.hub.state.last_prompt(task.task_id, task.attempt)
        if ev is None or not is_marker(ev):
            raise ShellError(grpc.StatusCode.FAILED_PRECONDITION,
                             f"task {task.task_id} is not at a shell prompt (open shells with "
                             f"`cortexctl shell open`)")
        pending = self._pending.get(task.task_id)
        if pending is not None and ev.offset <= pending:
            raise ShellError(grpc.StatusCode.FAILED_PRECONDITION,
                             f"shell {task.task_id} is still running an earlier command")
        self._pending.pop(task.task_id, None)
        return ev

    async def _next_marker(self, watcher: Watcher, task: TaskRow,
                           start: node_pb2.PromptEvent) -> node_pb2.PromptEvent:
        ev = self.hub.state.last_prompt(task.task_id, task.attempt)
        while True:
            if ev is not None and is_marker(ev) and ev.offset > start.offset:
                return ev
            ev = None
            kind, payload = await watcher.queue.get()
            if kind == "prompt" and isinstance(payload, node_pb2.PromptEvent):
                if payload.attempt == task.attempt:
                    ev = payload  # the first marker past ours ends the command
            elif kind == "lagged":  # events were dropped: the last prompt says where it is
                watcher.lagged = False
                ev = self.hub.state.last_prompt(task.task_id, task.attempt)
            elif kind == "state" and isinstance(payload, TaskRow) and payload.state.terminal:
                raise ShellError(grpc.StatusCode.FAILED_PRECONDITION,
                                 f"shell {task.task_id} ended: {payload.state.value} "
                                 f"{payload.reason}".rstrip())

    async def _durable(self, watcher: Watcher, task: TaskRow, start: int, end: int) -> bytes:
        """The stored output ``[start, end)`` (capped), waiting for it to be stored."""
        want = min(end, start + MAX_OUTPUT_BYTES + 256)  # room for the marker's bytes
        data = bytearray()
        while start + len(data) < want:
            chunk = await self.hub.state.store.read_output(
                task.task_id, task.attempt, start + len(data),
                min(READ_CHUNK_BYTES, want - start - len(data)))
            if chunk:
                data += chunk
                continue
            try:  # not stored yet: the next output event, or a re-read soon
                await asyncio.wait_for(watcher.queue.get(), STORE_RECHECK_S)
            except TimeoutError:
                pass
        if want < end:  # truncated: the marker is past what was read
            return bytes(data[:MAX_OUTPUT_BYTES])
        return bytes(data)
