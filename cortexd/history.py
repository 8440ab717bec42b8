"""The history checker: replay a store's recorded transitions and prove the lifecycle held.

Input: every row of ``transitions`` (accepted and refused, in id order) and every
task. Per task, ids follow commit order: each conditional write locks the task
row before it inserts its transition. The checks, each a kind of
:class:`Violation`:

- ``terminal``: a task reaches at most one terminal state; a task that reached
  none is *active* (queued, assigned or running), counted apart, not a violation.
- ``after_terminal``: nothing is accepted for a task after its terminal state.
- ``superseded``: no attempt writes after it was superseded: an accepted write of
  attempt *a* after one of a later attempt, or of the same attempt at a lower
  node epoch after one at a higher epoch (epoch 0 is "bound to no node": a
  requeue, or a cancel while queued, and is not compared).
- ``duplicate``: no write id is accepted twice, and no (task, attempt, state)
  is entered twice.
- ``chain``: each accepted transition starts where the previous one ended (the
  first from QUEUED), so no accepted write was lost or reordered.
- ``state``: the task row's state is where its accepted history ends.
- ``epoch``: per node, the session epochs of accepted placements (→ ASSIGNED)
  never go back in id order. Within one hub that is commit order (one group
  commit writer); across hubs ids follow insert order, so a flagged pair there
  is a placement made with a session the hub had not yet seen superseded.

``python -m cortexd.history --store URL [--json]`` prints the report and exits
1 when it finds a violation (2 when the store cannot be read).
"""

import asyncio
import json
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cortex.cliargs import Parser
from cortexd.lifecycle import TERMINAL, State
from cortexd.store import Store, StoreError, TaskRow, TransitionRow, open_store


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str
    task_id: str
    detail: str


@dataclass(slots=True)
class HistoryReport:
    tasks: int = 0
    transitions: int = 0
    accepted: int = 0
    refused: int = 0
    ended: int = 0  # tasks in exactly one terminal state
    active: list[str] = field(default_factory=list)  # tasks with no terminal state yet
    by_state: dict[str, int] = field(default_factory=dict)  # final state of each task
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        kinds = Counter(v.kind for v in self.violations)
        return (f"{self.tasks} tasks, {self.transitions} transitions ({self.accepted} accepted, "
                f"{self.refused} refused); {self.ended} ended, {len(self.active)} active; "
                f"{len(self.violations)} violations"
                + (f" ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})"
                   if kinds else ""))


def _check_task(task_id: str, rows: Sequence[TransitionRow], report: HistoryReport,
                seen_writes: dict[str, str]) -> str:
    """Check one task's accepted rows (in id order); return the state they end in."""
    def bad(kind: str, detail: str) -> None:
        report.violations.append(Violation(kind, task_id, detail))

    state = State.QUEUED.value
    terminal_at: TransitionRow | None = None
    entered: set[tuple[int, str]] = set()
    top_attempt, top_epoch = 0, 0
    for r in rows:
        where = f"{r.from_state}→{r.to_state} attempt {r.attempt} epoch {r.node_epoch}"
        if r.write_id:
            if r.write_id in seen_writes:
                bad("duplicate", f"write {r.write_id} accepted twice ({where})")
            seen_writes[r.write_id] = task_id
        if (r.attempt, r.to_state) in entered:
            bad("duplicate", f"entered {r.to_state} twice in attempt {r.attempt} ({where})")
        entered.add((r.attempt, r.to_state))
        if terminal_at is not None:
            bad("after_terminal", f"{where} accepted after {terminal_at.to_state}")
        if r.from_state != state:
            bad("chain", f"{where} accepted while the history says {state}")
        if r.attempt < top_attempt:
            bad("superseded", f"{where} accepted after attempt {top_attempt} was")
        elif r.attempt == top_attempt and 0 < r.node_epoch < top_epoch:
            bad("superseded", f"{where} accepted after epoch {top_epoch} of that attempt was")
        if r.attempt > top_attempt:
            top_attempt, top_epoch = r.attempt, r.node_epoch
        elif r.attempt == top_attempt:
            top_epoch = max(top_epoch, r.node_epoch)
        if State(r.to_state) in TERMINAL:
            if terminal_at is not None:
                bad("terminal", f"second terminal state {r.to_state} after "
                                f"{terminal_at.to_state}")
            else:
                terminal_at = r
        state = r.to_state
    return state


def check(transitions: Iterable[TransitionRow], tasks: Iterable[TaskRow]) -> HistoryReport:
    """Replay ``transitions`` (in id order) against ``tasks``; pure."""
    report = HistoryReport()
    by_task: dict[str, list[TransitionRow]] = {}
    placements: dict[str, list[TransitionRow]] = {}
    for r in transitions:
        report.transitions += 1
        if not r.accepted:
            report.refused += 1
            continue
        report.accepted += 1
        by_task.setdefault(r.task_id, []).append(r)
        if r.to_state == State.ASSIGNED.value and r.node_id:
            placements.setdefault(r.node_id, []).append(r)
    rows = {t.task_id: t for t in tasks}
    report.tasks = len(rows)
    seen_writes: dict[str, str] = {}
    for task_id in sorted(rows.keys() | by_task.keys()):
        history = by_task.get(task_id, [])
        final = _check_task(task_id, history, report, seen_writes)
        report.by_state[final] = report.by_state.get(final, 0) + 1
        if (row := rows.get(task_id)) is None:
            report.violations.append(Violation("state", task_id, "transitions of a task the "
                                               "store does not hold"))
        elif row.state.value != final:
            report.violations.append(Violation("state", task_id, f"task row is "
                                               f"{row.state.value}, history ends in {final}"))
        if State(final) in TERMINAL:
            if sum(State(r.to_state) in TERMINAL for r in history) == 1:
                report.ended += 1
        else:
            report.active.append(task_id)
    for node_id, placed in sorted(placements.items()):
        top: TransitionRow | None = None
        for r in placed:
            if top is not None and r.node_epoch < top.node_epoch:
                report.violations.append(Violation(
                    "epoch", r.task_id, f"placed on {node_id} at epoch {r.node_epoch} after "
                    f"{top.task_id} was placed there at epoch {top.node_epoch}"))
            if top is None or r.node_epoch > top.node_epoch:
                top = r
    return report


async def check_store(store: Store) -> HistoryReport:
    """Read an open store's transitions and tasks and check them."""
    return check(await store.transitions(), await store.tasks_in(frozenset(State)))


async def check_url(url: str) -> HistoryReport:
    """Open the store named by ``url``, check its history, close it."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise StoreError(f"store {url.removeprefix('sqlite:///')} does not exist")
    store = open_store(url)
    await store.open()
    try:
        return await check_store(store)
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m cortexd.history",
                                description="Check the recorded task transitions of a store.")
    p.add_argument("--store", required=True, metavar="URL",
                   help="sqlite:///PATH or postgresql://…")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--max-violations", type=int, default=50, metavar="N",
                   help="print at most N violations (default 50)")
    args = p.parse_args(argv)
    try:
        report = asyncio.run(check_url(args.store))
    except StoreError as e:
        print(f"history: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        print(report.summary())
        for v in report.violations[:args.max_violations]:
            print(f"  {v.kind:14} {v.task_id}  {v.detail}")
        if len(report.violations) > args.max_violations:
            print(f"  … and {len(report.violations) - args.max_violations} more")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
