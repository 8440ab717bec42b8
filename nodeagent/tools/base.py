"""The tool seam: what a tool is, what it makes for one task, and how that reports back.

A **tool** (:class:`Tool`) is a kind of work a node can do — the PTY shell
(:mod:`nodeagent.tools.shell`), a browser (browserd), or whatever a third party installs
under the entry-point group ``cortex.tools`` (:mod:`nodeagent.tools.registry`). It
declares ``name`` (``cortex.tools.TOOL_NAME_RE``), ``version`` and ``input_schema`` (a JSON
Schema of the task's input), and makes one :class:`TaskRunner` per task attempt.

The contract between the task host and a runner is this one, for every tool:

- The host builds the runner with the task (:class:`ToolTask`) and a :class:`TaskEvents`
  sink, then calls :meth:`TaskRunner.start` once.
- The runner calls ``events.started(pid)`` exactly once before any ``events.output`` (pid
  0 when the tool runs no process of its own), or ``events.start_failed(message)`` when
  nothing ran; ``start`` may also raise :class:`ToolError` for the same.
- ``done`` resolves exactly once with a :class:`~nodeagent.runner.TaskExit`, after the
  last ``events.output`` and when nothing of the task is left running — also after a
  start failure. A runner never raises out of ``done``; the host treats an exception
  there as the tool crashing (exit 70, ``EX_SOFTWARE``), never as the agent's.
- ``cancel(kind, reason)`` asks the task to end (gracefully); ``kill_now`` ends it at
  once; the first reason to end wins. ``write_input`` returns False when it cannot take
  the bytes. ``pty_fd`` (-1 when none) lets the kernel prompt layer see the terminal;
  ``protected_pids`` are pids the runner reaps itself (the orphan reaper leaves them).

The input: for a tool whose schema is ``{"type": "string", ...}`` the task's command text
is the input; for any other schema the text is parsed as JSON. The host validates it
against the schema (:func:`nodeagent.tools.registry.parse_input`) before the runner is
made, so a runner only ever sees a valid input.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from nodeagent.cgroup import TaskCgroup
from nodeagent.errors import NodeAgentError
from nodeagent.runner import RunSpec, TaskExit

EX_SOFTWARE = 70  # a tool that crashed (sysexits.h)
EX_DATAERR = 65  # the task's input does not match the tool's schema


class ToolError(NodeAgentError):
    """A tool could not start a task, or is not usable (its message is for the operator)."""


@dataclass(frozen=True, slots=True)
class ToolTask:
    """One task attempt as a tool sees it."""

    task_id: str
    attempt: int
    tenant: str
    input: Any  # validated against the tool's input_schema (str for a string schema)
    run: RunSpec  # command (the raw text), env, cwd, terminal size, timeouts, prompt markers
    cgroup: TaskCgroup | None = None  # the task's cgroup, where the node isolates by cgroup
    cancel_grace_s: float = 2.0  # between the steps of a graceful stop
    drain_quiet_s: float = 0.1
    in_worker: bool = True  # the node runs tasks in their own worker process (where it can)


class TaskEvents(Protocol):
    """Where a runner reports; the host's side of the contract (one per task attempt)."""

    def started(self, pid: int) -> None: ...

    def start_failed(self, message: str) -> None: ...

    def output(self, data: bytes) -> None: ...


@runtime_checkable
class TaskRunner(Protocol):
    done: asyncio.Future[TaskExit]

    @property
    def pty_fd(self) -> int: ...

    @property
    def protected_pids(self) -> frozenset[int]: ...

    def start(self) -> None: ...

    def cancel(self, kind: int, reason: str) -> None: ...

    def kill_now(self, kind: int, reason: str) -> None: ...

    def write_input(self, data: bytes) -> bool: ...


@runtime_checkable
class Tool(Protocol):
    """What an entry point in ``cortex.tools`` names: a class (built with no arguments)
    or an object with these attributes."""

    name: str
    version: str
    input_schema: Mapping[str, Any]

    def runner(self, task: ToolTask, events: TaskEvents) -> TaskRunner: ...
