"""Reconciliation on attach, pure: what a node reports against what the store holds.

A node that (re-)attaches lists the task attempts it still runs (``Hello.tasks``).
:func:`reconcile` compares them with the stored tasks and decides, without a store
or a socket:

- KEEP (with the durable output end to resume from) a reported attempt that is the
  task's current one, on this node, and active; it is rebound to the new session;
  one whose cancel was requested is cancelled again (the first cancel may be lost).
- KILL any other reported attempt (superseded, ended, unknown).
- resend an ASSIGNED task of this node that the node does not report: dispatch is
  at-least-once, the envelope may never have arrived.
- LOST for a RUNNING task of this node that the node does not report: it came back
  without it.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cortex.v1 import node_pb2
from cortexd.lifecycle import ACTIVE, State
from cortexd.store import TaskRow


@dataclass(frozen=True, slots=True)
class Verdict:
    task_id: str
    attempt: int
    verdict: node_pb2.Verdict
    resume_offset: int = 0


@dataclass(slots=True)
class Reconciliation:
    verdicts: list[Verdict] = field(default_factory=list)
    keep: list[TaskRow] = field(default_factory=list)  # rebind to the new session
    cancels: list[TaskRow] = field(default_factory=list)  # kept, cancel requested
    resend: list[TaskRow] = field(default_factory=list)  # ASSIGNED, not reported
    lost: list[TaskRow] = field(default_factory=list)  # active, not reported, not ASSIGNED


def reconcile(node_id: str, reported: Iterable[tuple[str, int]],
              stored: Mapping[str, TaskRow | None], active: Iterable[TaskRow]
              ) -> Reconciliation:
    """``reported``: (task_id, attempt) from the Hello; ``stored``: the stored row of
    each reported task (None: unknown); ``active``: the stored active tasks of the node."""
    out = Reconciliation()
    seen: set[str] = set()
    kept: set[str] = set()
    for task_id, attempt in reported:
        seen.add(task_id)
        task = stored.get(task_id)
        if (task is not None and task.attempt == attempt and task.node_id == node_id
                and task.state in ACTIVE):
            if task_id not in kept:
                kept.add(task_id)
                out.keep.append(task)
                if task.cancel_requested:
                    out.cancels.append(task)
            out.verdicts.append(Verdict(task_id, attempt, node_pb2.VERDICT_KEEP,
                                        task.output_bytes))
        else:
            out.verdicts.append(Verdict(task_id, attempt, node_pb2.VERDICT_KILL))
    for task in active:
        if task.task_id in seen:
            continue
        (out.resend if task.state is State.ASSIGNED else out.lost).append(task)
    return out
