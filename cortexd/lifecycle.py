"""The task state machine (DESIGN.md §4), pure.

``QUEUED → ASSIGNED → RUNNING → SUCCEEDED | FAILED | CANCELLED | TIMED_OUT | LOST``;
a retry goes back to QUEUED and becomes a new attempt. Every transition is
written conditionally on (task, attempt, node session epoch) by the store; this
module only says which transitions exist.
"""

from enum import StrEnum


class State(StrEnum):
    QUEUED = "QUEUED"
    ASSIGNED = "ASSIGNED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"
    LOST = "LOST"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED, State.TIMED_OUT,
                      State.LOST})
ACTIVE = frozenset({State.ASSIGNED, State.RUNNING})

_FINISHED = {State.SUCCEEDED, State.FAILED, State.CANCELLED, State.TIMED_OUT, State.LOST}
ALLOWED: dict[State, frozenset[State]] = {
    State.QUEUED: frozenset({State.ASSIGNED, State.CANCELLED, State.FAILED}),
    State.ASSIGNED: frozenset({State.RUNNING, State.QUEUED, *_FINISHED}),
    State.RUNNING: frozenset({State.QUEUED, *_FINISHED}),
    State.SUCCEEDED: frozenset(),
    State.FAILED: frozenset(),
    State.CANCELLED: frozenset(),
    State.TIMED_OUT: frozenset(),
    State.LOST: frozenset(),
}


def sources(target: State) -> frozenset[State]:
    """The states from which ``target`` may be entered."""
    return frozenset(s for s, targets in ALLOWED.items() if target in targets)


def finished_state(kind: int, exit_code: int, cancel_requested: bool) -> State:
    """Map a node's TaskFinished (FinishKind value) to the terminal state."""
    # FinishKind: 1 EXITED, 2 CANCELLED, 3 TIMED_OUT, 4 LOST
    if kind == 2 or (cancel_requested and exit_code != 0):
        return State.CANCELLED
    if kind == 3:
        return State.TIMED_OUT
    if kind == 4:
        return State.LOST
    return State.SUCCEEDED if exit_code == 0 else State.FAILED


def folded_output(output: bytes, output_end: int) -> bytes:
    """A TaskFinished's folded output (the bytes just before ``output_end``), if well
    formed; else nothing is appended."""
    return output if output and len(output) <= output_end else b""
