"""The artifact steps around a task's run: inputs before it starts, outputs before it ends.

``TaskFiles`` is held by the ``TaskHost``. For an admitted envelope whose spec names
inputs or outputs, ``stage`` fetches and places the inputs, then calls the host's start;
nothing is recorded in the ran log and nothing runs until then, so an agent that dies
while fetching has run nothing (the hub sends the attempt again). A re-sent envelope
while its inputs are fetched is ignored; staging tasks count against capacity. A fetch
that fails rejects the attempt (``input_failed``: the task fails with the reason).

A task without ``--cwd`` that has artifacts runs in a fresh per-attempt directory
(``STATE_DIR/work/<task>-<attempt>``), removed once its outputs are collected. When the
command ends, ``on_exit`` collects the outputs (uploads, then ``AttachOutputs``) before
the host records the exit, so the hub lists them before it hears the task finished.
"""

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cortex.v1 import node_pb2
from nodeagent.admission import Rejection
from nodeagent.artifacts import ArtifactFailure, ArtifactLink

Key = tuple[str, int]


class TaskFiles:
    def __init__(self, state_dir: Path, log: Any) -> None:
        self.work_root = state_dir / "work"
        self.link: ArtifactLink | None = None  # set by the agent when --control is given
        self.log = log
        self._staging: dict[Key, asyncio.Task[None]] = {}
        self._outputs: dict[Key, tuple[Path, list[str], bool]] = {}
        self._collecting: set[asyncio.Task[None]] = set()

    @property
    def staging(self) -> int:
        return len(self._staging)

    @staticmethod
    def wanted(env: node_pb2.TaskEnvelope) -> bool:
        return bool(env.spec.inputs or env.spec.outputs)

    def stage(self, env: node_pb2.TaskEnvelope, start: Callable[[node_pb2.TaskEnvelope], None],
              reject: Callable[[Rejection], None], draining: Callable[[], bool]) -> None:
        key = (env.task_id, env.attempt)
        if key in self._staging:
            return
        if self.link is None:
            reject(Rejection(env.task_id, env.attempt, "input_failed",
                             "this node has no --control address: it cannot move artifacts"))
            return
        made = not env.spec.cwd
        workdir = Path(env.spec.cwd) if env.spec.cwd else self.work_root / f"{key[0]}-{key[1]}"

        async def fetch_then_start() -> None:
            assert self.link is not None
            try:
                workdir.mkdir(parents=True, exist_ok=True)
                await self.link.place_inputs(env.task_id, env.spec.inputs, workdir)
            except (ArtifactFailure, OSError) as e:
                self.log.warning("task_inputs_failed", task=env.task_id, error=str(e))
                reject(Rejection(env.task_id, env.attempt, "input_failed", str(e)))
                return
            if draining():
                reject(Rejection(env.task_id, env.attempt, "draining", "node is draining"))
                return
            env.spec.cwd = str(workdir)
            if env.spec.outputs or made:
                self._outputs[key] = (workdir, list(env.spec.outputs), made)
            start(env)

        task = asyncio.create_task(fetch_then_start())
        self._staging[key] = task
        task.add_done_callback(lambda _: self._staging.pop(key, None))

    def on_exit(self, key: Key, attempt_done: Callable[[], None]) -> bool:
        """True if the exit waits for the outputs (``attempt_done`` is called after)."""
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
