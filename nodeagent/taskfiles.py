"""The artifact steps around a task's run: inputs before it starts, outputs before it ends.

``TaskFiles`` is held by the ``TaskHost``. For an admitted envelope whose spec names
inputs or outputs, ``stage`` fetches and places the inputs, then calls the host's start;
nothing is recorded in the ran log and nothing runs until then, so an agent that dies
while fetching has run nothing (the hub sends the attempt again). A re-sent envelope
while its inputs are fetched is ignored; staging tasks count against capacity. A fetch
that fails rejects the attempt (``input_failed``: the task fails with the reason).

A task in a workspace (``spec.workspace``) waits here too, for its copy to be current
(``WorkspaceMirror.current``: a sync round that started after the task arrived, within
``workspace_wait_s``), then runs in the copy's root, or in ``spec.cwd`` resolved inside
it (never outside, symlinks included); a copy not attached here or a round that does not
come, or a cwd that is not a directory in it, rejects the attempt (``workspace_failed``:
the task fails with the reason). When it
ends, its copy is poked so what it wrote reaches the hub at once.

A task without ``--cwd`` or workspace that has artifacts runs in a fresh per-attempt directory
(``STATE_DIR/work/<task>-<attempt>``), removed once its outputs are collected. When the
command ends, ``on_exit`` collects the outputs (uploads, then ``AttachOutputs``) before
the host records the exit, so the hub lists them before it hears the task finished.
"""

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cortex.v1 import node_pb2
from nodeagent.admission import Rejection
from nodeagent.artifacts import ArtifactFailure, ArtifactLink
from nodeagent.workspace.mirror import WorkspaceMirror

Key = tuple[str, int]


class TaskFiles:
    def __init__(self, state_dir: Path, log: Any) -> None:
        self.work_root = state_dir / "work"
        self.link: ArtifactLink | None = None  # set by the agent when --control is given
        self.workspaces: WorkspaceMirror | None = None  # likewise
        self.workspace_wait_s = 60.0
        self._in_workspace: dict[Key, str] = {}
        self.log = log
        self._staging: dict[Key, asyncio.Task[None]] = {}
        self._outputs: dict[Key, tuple[Path, list[str], bool]] = {}
        self._collecting: set[asyncio.Task[None]] = set()

    @property
    def staging(self) -> int:
        return len(self._staging)

    @staticmethod
    def wanted(env: node_pb2.TaskEnvelope) -> bool:
        return bool(env.spec.inputs or env.spec.outputs or env.spec.workspace)

    def stage(self, env: node_pb2.TaskEnvelope, start: Callable[[node_pb2.TaskEnvelope], None],
              reject: Callable[[Rejection], None], draining: Callable[[], bool]) -> None:
        key = (env.task_id, env.attempt)
        spec = env.spec
        if key in self._staging:
            return
        if (spec.inputs or spec.outputs) and self.link is None:
            reject(Rejection(env.task_id, env.attempt, "input_failed",
                             "this node has no --control address: it cannot move artifacts"))
            return
        if spec.workspace and self.workspaces is None:
            reject(Rejection(env.task_id, env.attempt, "workspace_failed", "this node has no "
                             "--control address: it keeps no workspace copies"))
            return
        made = not spec.cwd and not spec.workspace
        workdir = Path(spec.cwd) if spec.cwd else self.work_root / f"{key[0]}-{key[1]}"

        async def fetch_then_start() -> None:
            nonlocal workdir
            if spec.workspace:
                assert self.workspaces is not None
                try:
                    root = await self.workspaces.current(spec.workspace, self.workspace_wait_s)
                    workdir = in_copy(root, spec.cwd)
                    if not workdir.is_dir():
                        raise ValueError(f"cwd {spec.cwd!r} is not a directory in the copy "
                                         f"of workspace {spec.workspace!r}")
                except (LookupError, TimeoutError, ValueError) as e:
                    self.log.warning("task_workspace_failed", task=env.task_id,
                                     workspace=spec.workspace, error=str(e))
                    reject(Rejection(env.task_id, env.attempt, "workspace_failed", str(e)))
                    return
            try:
                workdir.mkdir(parents=True, exist_ok=True)
                if spec.inputs:
                    assert self.link is not None
                    await self.link.place_inputs(env.task_id, spec.inputs, workdir)
            except (ArtifactFailure, OSError) as e:
                self.log.warning("task_inputs_failed", task=env.task_id, error=str(e))
                reject(Rejection(env.task_id, env.attempt, "input_failed", str(e)))
                return
            if draining():
                reject(Rejection(env.task_id, env.attempt, "draining", "node is draining"))
                return
            spec.cwd = str(workdir)
            if spec.outputs or made:
                self._outputs[key] = (workdir, list(spec.outputs), made)
            if spec.workspace:
                self._in_workspace[key] = spec.workspace
            start(env)

        task = asyncio.create_task(fetch_then_start())
        self._staging[key] = task
        task.add_done_callback(lambda _: self._staging.pop(key, None))

    def on_exit(self, key: Key, attempt_done: Callable[[], None]) -> bool:
        """True if the exit waits for the outputs (``attempt_done`` is called after)."""
        name = self._in_workspace.pop(key, None)
        if name is not None and self.workspaces is not None:
            self.workspaces.poke(name)  # what the task wrote goes to the hub now
        found = self._outputs.pop(key, None)
        if found is None:
            return False
        workdir, paths, made = found

        async def collect() -> None:
            try:
                if paths and self.link is not None:
                    outs = await self.link.collect_outputs(key[0], key[1], paths, workdir)
                    self.log.info("task_outputs", task=key[0], attempt=key[1],
                                  collected=sum(not o.error for o in outs),
                                  errors=[f"{o.path}: {o.error}" for o in outs if o.error])
            except ArtifactFailure as e:
                self.log.error("task_outputs_failed", task=key[0], error=str(e))
            finally:
                if made:
                    await asyncio.to_thread(shutil.rmtree, workdir, True)
                attempt_done()

        task = asyncio.create_task(collect())
        self._collecting.add(task)
        task.add_done_callback(self._collecting.discard)
        return True

    async def close(self) -> None:
        for t in list(self._staging.values()) + list(self._collecting):
            t.cancel()
        if self.link is not None:
            await self.link.close()


def in_copy(root: Path, cwd: str) -> Path:
    """``cwd`` (relative; "" = the root) inside the copy at ``root``, symlinks resolved;
    ValueError if it would leave the copy."""
    if cwd.startswith("/"):
        raise ValueError(f"cwd {cwd!r}: with a workspace it is relative to the copy's root")
    real_root = Path(os.path.realpath(root))
    path = Path(os.path.realpath(real_root / cwd)) if cwd else real_root
    if path != real_root and not path.is_relative_to(real_root):
        raise ValueError(f"cwd {cwd!r} leaves the workspace's copy")
    return path
