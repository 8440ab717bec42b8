"""The PTY shell, the first tool: ``/bin/sh -c INPUT`` in a PTY (nodeagent/runner.py).

It runs the command in the task's own worker process (:mod:`nodeagent.workertask`) when
the node is set up that way (``task_runner = worker``, the default), else inline in the
agent (:mod:`nodeagent.runner`). :class:`ShellRunner` gives both the one runner contract
of :mod:`nodeagent.tools.base`: the inline process reports ``started`` from ``start``
(its pid is known at once), the worker when the worker says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import cortex
from cortex.tools import SHELL
from nodeagent.errors import SpawnError
from nodeagent.runner import TaskExit, TaskProcess
from nodeagent.tools.base import TaskEvents, ToolError, ToolTask
from nodeagent.workertask import WorkerTask

INPUT_SCHEMA: Mapping[str, Any] = {
    "type": "string", "minLength": 1,
    "description": "a command line, run by /bin/sh -c in a PTY",
}


class ShellRunner:
    def __init__(self, task: ToolTask, events: TaskEvents) -> None:
        self._events = events
        self._proc: TaskProcess | WorkerTask
        if task.in_worker:
            self._proc = WorkerTask(
                task.run, events.output, on_started=events.started,
                on_start_failed=lambda e: events.start_failed(str(e)),
                cancel_grace_s=task.cancel_grace_s, drain_quiet_s=task.drain_quiet_s,
                cgroup=task.cgroup)
        else:
            self._proc = TaskProcess(task.run, events.output,
                                     cancel_grace_s=task.cancel_grace_s,
                                     drain_quiet_s=task.drain_quiet_s, cgroup=task.cgroup)
        self.done: asyncio.Future[TaskExit] = self._proc.done

    def start(self) -> None:
        try:
            pid = self._proc.start()  # 0 for a worker: it reports the pid when it has one
        except SpawnError as e:
            raise ToolError(str(e)) from e
        if pid:
            self._events.started(pid)

    @property
    def pty_fd(self) -> int:
        return self._proc.pty_fd

    @property
    def protected_pids(self) -> frozenset[int]:
        if isinstance(self._proc, WorkerTask):
            return frozenset(self._proc.reaped_pids)
        return frozenset((self._proc.pid,)) if self._proc.pid else frozenset()

    def cancel(self, kind: int, reason: str) -> None:
        self._proc.cancel(kind, reason)

    def kill_now(self, kind: int, reason: str) -> None:
        self._proc.kill_now(kind, reason)

    def write_input(self, data: bytes) -> bool:
        return self._proc.write_input(data)


class ShellTool:
    name = SHELL
    version = cortex.__version__
    input_schema = INPUT_SCHEMA

    def runner(self, task: ToolTask, events: TaskEvents) -> ShellRunner:
        return ShellRunner(task, events)
