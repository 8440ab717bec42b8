"""One attempt's side of the tool contract: what the host gives a runner, and hears back.

Every task is run by its tool (:mod:`nodeagent.tools`): the host builds the tool's
:class:`~nodeagent.tools.base.TaskRunner` with the attempt's :class:`RunSpec` and a
per-attempt :class:`AttemptEvents`, and holds only that contract. Invariants:

- ``started`` or ``start_failed`` reaches the host once per attempt, whichever the
  runner says first; output is handed on as it comes (the host spools it).
- A runner whose ``done`` is cancelled or fails ends its attempt with exit 70
  (``EX_SOFTWARE``) and the error as its reason (:func:`exit_of`): a tool's crash
  never reaches the agent's loop.
"""

import asyncio
import os
from typing import Protocol

from cortex.v1 import node_pb2
from nodeagent.admission import Rejection
from nodeagent.cgroup import TaskCgroup
from nodeagent.config import AgentConfig
from nodeagent.runner import RunSpec, TaskExit
from nodeagent.tasktable import TaskKey
from nodeagent.tools.base import EX_SOFTWARE, ToolTask
from nodeagent.tools.registry import ToolSet


class AttemptHost(Protocol):
    """What an attempt's events call on the host (``nodeagent.host.TaskHost``)."""

    def attempt_started(self, env: node_pb2.TaskEnvelope, pid: int) -> None: ...

    def attempt_start_failed(self, env: node_pb2.TaskEnvelope, cgroup: TaskCgroup | None,
                             message: str) -> None: ...

    def attempt_output(self, key: TaskKey, data: bytes) -> None: ...


class AttemptEvents:
    """The host's side of one attempt's runner contract (``nodeagent.tools.base``)."""

    def __init__(self, host: AttemptHost, env: node_pb2.TaskEnvelope,
                 cgroup: TaskCgroup | None) -> None:
        self._host = host
        self._env = env
        self._cgroup = cgroup
        self._key = (env.task_id, env.attempt)
        self.reported = False  # started or start_failed said (once)

    def started(self, pid: int) -> None:
        if not self.reported:
            self.reported = True
            self._host.attempt_started(self._env, pid)

    def start_failed(self, message: str) -> None:
        if not self.reported:
            self.reported = True
            self._host.attempt_start_failed(self._env, self._cgroup, message)

    def output(self, data: bytes) -> None:
        self._host.attempt_output(self._key, data)


def cannot_start(env: node_pb2.TaskEnvelope, tools: ToolSet) -> Rejection | None:
    """Why an envelope admission accepted cannot start on this node (None: it can)."""
    if tools.get(env.spec.tool) is None:
        # Placed on a stale view of this node's tools: "capacity" lets the hub place
        # it elsewhere (and fail it after its attempts).
        return Rejection(env.task_id, env.attempt, "capacity",
                         f"node has no tool {env.spec.tool!r}")
    if env.spec.cwd and not env.spec.workspace and not os.path.isdir(env.spec.cwd):
        return Rejection(env.task_id, env.attempt, "malformed",
                         f"cwd {env.spec.cwd!r} is not a directory on this node")
    return None


def tool_task(env: node_pb2.TaskEnvelope, tools: ToolSet, config: AgentConfig,
              prompt_env: dict[str, str], cgroup: TaskCgroup | None) -> ToolTask:
    """What the attempt's tool is given, from its signed envelope (ToolInputError when
    the tool cannot parse the command)."""
    run = RunSpec(command=env.spec.command, env=dict(env.spec.env), cwd=env.spec.cwd,
                  cols=env.spec.cols or 200, rows=env.spec.rows or 50,
                  timeout_s=float(env.spec.timeout_s),
                  idle_timeout_s=float(env.spec.idle_timeout_s),
                  allow_prompts=env.spec.allow_prompts, prompt_env=prompt_env)
    return ToolTask(env.task_id, env.attempt, env.tenant,
                    tools.parse_input(env.spec.tool or "shell", env.spec.command), run, cgroup,
                    cancel_grace_s=config.cancel_grace_s, drain_quiet_s=config.drain_quiet_s,
                    in_worker=config.task_runner == "worker")


def exit_of(done: "asyncio.Future[TaskExit]", tool: str) -> TaskExit:
    """The attempt's end as its runner's ``done`` says it, a crash included."""
    if done.cancelled():
        return TaskExit(EX_SOFTWARE, node_pb2.FINISH_KIND_EXITED, f"tool {tool} was cancelled")
    err = done.exception()
    if err is not None:
        return TaskExit(EX_SOFTWARE, node_pb2.FINISH_KIND_EXITED,
                        f"tool {tool} crashed: {type(err).__name__}: {err}")
    return done.result()
