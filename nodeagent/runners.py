"""The task runners this node started and has not yet reaped.

A runner is here from its start until its attempt ends (``pop``) or is forgotten
(:meth:`Runners.kill`: a ``KILL`` verdict, a ``FinishedAck`` racing a late exit).
A killed runner leaves the attempt's index at once but stays in ``processes`` until
its ``done`` resolves, so a shutdown waits for it and an orphan reaper leaves its
pids alone (``protected_pids``).
"""

from cortex.v1 import node_pb2
from nodeagent.tasktable import TaskKey
from nodeagent.tools.base import TaskRunner


class Runners:
    def __init__(self) -> None:
        self._live: dict[TaskKey, TaskRunner] = {}
        self._dying: set[TaskRunner] = set()  # dropped from the table, not yet reaped

    def add(self, key: TaskKey, runner: TaskRunner) -> TaskRunner:
        self._live[key] = runner
        return runner

    def get(self, key: TaskKey) -> TaskRunner | None:
        return self._live.get(key)

    def pty_fd(self, key: TaskKey) -> int:
        runner = self._live.get(key)
        return runner.pty_fd if runner is not None else -1

    def pop(self, key: TaskKey) -> TaskRunner | None:
        return self._live.pop(key, None)

    def kill(self, key: TaskKey, reason: str) -> None:
        """Kill what is left of the attempt; it stays a process until it is reaped."""
        proc = self._live.pop(key, None)
        if proc is not None:
            proc.kill_now(node_pb2.FINISH_KIND_CANCELLED, reason)
            self._dying.add(proc)
            proc.done.add_done_callback(lambda _: self._dying.discard(proc))

    @property
    def processes(self) -> list[TaskRunner]:
        """Every task process not yet reaped, including those already dropped."""
        return [*self._live.values(), *self._dying]

    def protected_pids(self) -> set[int]:
        return {pid for p in self.processes for pid in p.protected_pids if pid}

    def cancel_all(self, reason: str) -> None:
        for proc in self.processes:
            proc.cancel(node_pb2.FINISH_KIND_CANCELLED, reason)

    def kill_all(self, reason: str) -> None:
        for proc in self.processes:
            proc.kill_now(node_pb2.FINISH_KIND_CANCELLED, reason)
