"""What a node's ``TaskFinished`` makes of a task, pure: record its end, or first get
the rest of its output.

A task is terminal-and-complete only when the hub holds all the output the node says
it produced (issue 9: a real 1 MiB task once ended SUCCEEDED with 1,009,427 of its
1,069,547 bytes). So a Finished that claims more output than the hub holds is not
recorded: the hub closes the node's session instead (``RESYNC``); the node
re-attaches, its task is kept at the hub's durable end (``resume_offset``) and it
streams the rest, then finishes again. Only when a resync brought nothing new is the
end recorded, and then it says so plainly: an exit 0 becomes FAILED, and every such
state carries "output incomplete: the hub holds X of Y output bytes" in its reason.

A cancel that arrives after the process exited cannot undo the exit: the result
stands, and the reason says that the cancel came too late.
"""

from dataclasses import dataclass
from enum import Enum

from cortexd.lifecycle import State, finished_state


class Act(Enum):
    RECORD = "record"  # write the terminal state (conditional, as always)
    RESYNC = "resync"  # close the session: the node resends from the hub's end


@dataclass(frozen=True, slots=True)
class Finish:
    act: Act
    state: State
    reason: str


def _also(reason: str, note: str) -> str:
    return f"{reason}; {note}" if reason else note


def decide_finish(kind: int, exit_code: int, reason: str, output_end: int, held: int,
                  cancel_requested: bool, resynced_at: int | None) -> Finish:
    """``held``: the durable output end of the attempt here; ``resynced_at``: the end
    held when this attempt's last resync was asked for (None: none yet)."""
    state = finished_state(kind, exit_code, cancel_requested)
    if held < output_end:
        if resynced_at is None or held > resynced_at:
            return Finish(Act.RESYNC, state, reason)
        if state is State.SUCCEEDED:
            state = State.FAILED
        reason = _also(reason, f"output incomplete: the hub holds {held} of {output_end} "
                       "output bytes and the node could not resend the rest")
    elif held > output_end:
        reason = _also(reason, f"hub holds {held} of {output_end} output bytes")
    if cancel_requested and state is State.SUCCEEDED:
        reason = _also(reason, "cancel requested after the process had exited; its "
                       "result stands")
    return Finish(Act.RECORD, state, reason)
