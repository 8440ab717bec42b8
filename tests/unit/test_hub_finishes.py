"""A node's TaskFinished, decided without a store (cortexd/control/finishes.py)."""

from cortexd.control.finishes import Act, decide_finish
from cortexd.lifecycle import State

EXITED, CANCELLED = 1, 2


def test_all_output_held_records_the_result() -> None:
    f = decide_finish(EXITED, 0, "", 10, 10, False, None)
    assert (f.act, f.state, f.reason) == (Act.RECORD, State.SUCCEEDED, "")


def test_output_missing_asks_for_a_resync_while_resyncs_bring_more() -> None:
    assert decide_finish(EXITED, 0, "", 10, 4, False, None).act is Act.RESYNC
    assert decide_finish(EXITED, 0, "", 10, 7, False, 4).act is Act.RESYNC  # progress


def test_a_resync_that_brought_nothing_records_an_incomplete_end_plainly() -> None:
    f = decide_finish(EXITED, 0, "", 10, 4, False, 4)
    assert (f.act, f.state) == (Act.RECORD, State.FAILED)
    assert "output incomplete: the hub holds 4 of 10 output bytes" in f.reason
    g = decide_finish(CANCELLED, -9, "cancelled by hub", 10, 4, False, 4)
    assert g.state is State.CANCELLED and g.reason.startswith("cancelled by hub; output")


def test_a_cancel_after_the_exit_leaves_the_result_and_says_so() -> None:
    f = decide_finish(EXITED, 0, "", 10, 10, True, None)
    assert f.state is State.SUCCEEDED and "cancel requested after the process had exited" \
        in f.reason
    assert decide_finish(EXITED, 1, "", 10, 10, True, None).state is State.CANCELLED
