"""Reconciliation on attach (cortexd/control/reconcile.py): reported vs stored -> verdicts,
resends, lost — pure, without a store or a socket."""

from cortex.v1 import node_pb2
from cortexd.control.reconcile import reconcile
from cortexd.lifecycle import State
from cortexd.store import TaskRow


def row(task_id: str, state: State, attempt: int = 1, node_id: str = "n1",
        output_bytes: int = 0, cancel: bool = False) -> TaskRow:
    return TaskRow(task_id=task_id, command="true", state=state, attempt=attempt,
                   node_id=node_id, output_bytes=output_bytes, cancel_requested=cancel)


def test_the_current_active_attempt_on_this_node_is_kept_from_its_durable_end() -> None:
    t = row("t1", State.RUNNING, output_bytes=42)
    plan = reconcile("n1", [("t1", 1)], {"t1": t}, [t])
    assert [(v.task_id, v.verdict, v.resume_offset) for v in plan.verdicts] == [
        ("t1", node_pb2.VERDICT_KEEP, 42)]
    assert plan.keep == [t] and not plan.resend and not plan.lost and not plan.cancels


def test_superseded_ended_foreign_and_unknown_reports_are_killed() -> None:
    stored = {"old": row("old", State.RUNNING, attempt=2),
              "done": row("done", State.SUCCEEDED),
              "moved": row("moved", State.RUNNING, node_id="n2"),
              "gone": None}
    plan = reconcile("n1", [("old", 1), ("done", 1), ("moved", 1), ("gone", 1), ("x", 1)],
                     stored, [])
    assert [v.verdict for v in plan.verdicts] == [node_pb2.VERDICT_KILL] * 5
    assert not plan.keep and not plan.resend and not plan.lost


def test_unreported_assigned_is_resent_and_unreported_running_is_lost() -> None:
    assigned, running = row("a", State.ASSIGNED), row("r", State.RUNNING)
    plan = reconcile("n1", [], {}, [assigned, running])
    assert plan.resend == [assigned] and plan.lost == [running] and not plan.verdicts


def test_a_kept_task_whose_cancel_was_requested_is_cancelled_again_once() -> None:
    t = row("t1", State.RUNNING, cancel=True)
    plan = reconcile("n1", [("t1", 1), ("t1", 1)], {"t1": t}, [t])
    assert plan.keep == [t] and plan.cancels == [t]
    assert len(plan.verdicts) == 2  # each report gets its answer
