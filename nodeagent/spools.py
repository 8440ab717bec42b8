"""The node's attempt spools on disk: live ones, and finished ones kept for reads.

A live spool (``live``) belongs to an attempt in the task table, from its start until
the hub's ``FinishedAck`` or a ``KILL``; every output byte is in it before the table
may offer it. Invariants:

- The acknowledged offset is saved to the spool's meta at most every
  ``META_SAVE_INTERVAL_S`` while a task streams (a restart re-sends a little more,
  never less), and at the end with the rest of the meta.
- ``KILL`` deletes a spool. After ``FinishedAck`` it is kept for ``cortexctl logs``
  under the retention limits (:mod:`nodeagent.retention`), pruned oldest first, at
  each keep and at least every ``PRUNE_INTERVAL_S`` (the age limit, also when idle).
- A ``LogRequest`` is answered from the live spool, else the kept one
  (:mod:`nodeagent.spoolreads`).
"""

import contextlib
import shutil
import time
from typing import Any

from cortex.v1 import node_pb2
from nodeagent.config import AgentConfig
from nodeagent.errors import SpoolError
from nodeagent.retention import RetainedSpool, RetainedSpools
from nodeagent.spool import SpoolMeta, TaskSpool
from nodeagent.spoolreads import answer as answer_log_request
from nodeagent.tasktable import TaskKey

META_SAVE_INTERVAL_S = 1.0
PRUNE_INTERVAL_S = 60.0


class AttemptSpools:
    def __init__(self, config: AgentConfig, log: Any) -> None:
        self.tasks_dir = config.state_dir / "tasks"
        self._log = log
        self.live: dict[TaskKey, TaskSpool] = {}
        self._meta_saved_at: dict[TaskKey, float] = {}
        self.retained = RetainedSpools(max_age_s=config.spool_retention_s,
                                       max_bytes=config.spool_retention_bytes)
        self._pruned_at = 0.0

    def create(self, env: node_pb2.TaskEnvelope) -> TaskSpool:
        return TaskSpool.create(self.tasks_dir, SpoolMeta(
            task_id=env.task_id, attempt=env.attempt, command=env.spec.command,
            started_at=time.time()))

    def acked(self, key: TaskKey, acked: int) -> None:
        """The hub acknowledged up to ``acked``: note it in the meta, now and then."""
        now = time.monotonic()
        spool = self.live.get(key)
        if spool is not None and now - self._meta_saved_at.get(key, 0.0) >= META_SAVE_INTERVAL_S:
            spool.meta.acked_offset = acked
            self._meta_saved_at[key] = now
            with contextlib.suppress(SpoolError):
                spool.save_meta()

    def delete(self, key: TaskKey) -> None:
        spool = self.live.pop(key, None)
        if spool is not None:
            spool.delete()
        self._meta_saved_at.pop(key, None)

    def keep_for_reads(self, spool: TaskSpool) -> None:
        """The hub holds all of it: keep the spool for ``cortexctl logs``, within limits."""
        meta = spool.meta
        if meta.retained_at is None:
            meta.retained_at = time.time()
            with contextlib.suppress(SpoolError):
                spool.save_meta()
        spool.close()
        self.retained.add(RetainedSpool((meta.task_id, meta.attempt), spool.path, spool.end,
                                        meta.finished_at or meta.retained_at))
        self.prune()

    def prune_if_due(self) -> None:
        now = time.monotonic()
        if now - self._pruned_at >= PRUNE_INTERVAL_S:
            self._pruned_at = now
            self.prune()

    def prune(self) -> None:
        for gone in self.retained.due(time.time()):
            shutil.rmtree(gone.path, ignore_errors=True)
            self._log.info("spool_pruned", task=gone.key[0], attempt=gone.key[1],
                           bytes=gone.size_bytes, retained_bytes=self.retained.total_bytes)

    def answer(self, req: node_pb2.LogRequest) -> list[node_pb2.NodeFrame]:
        key = (req.task_id, req.attempt)
        return answer_log_request(req, self.live.get(key), self.retained.get(key))

    def close(self) -> None:
        for spool in self.live.values():
            spool.close()
