"""Test 2: a task that waits for input gets it through ``cortexctl input``."""

import pytest

pytestmark = pytest.mark.system


def test_read_answered_through_cortexctl_input(ctl, nodes):
    task_id = ctl.submit("read x; echo got $x")
    ctl.wait_state(task_id, ["RUNNING"])

    result = ctl("input", task_id, "hello world")
    assert result.returncode == 0, result.stderr

    out, status = ctl.watch(task_id)
    assert status == 0, out
    assert b"got hello world\r\n" in out
    assert ctl.task(task_id)["state"] == "SUCCEEDED"

    # A finished task takes no input: refused with a one-line message, exit 1.
    late = ctl("input", task_id, "too late")
    assert late.returncode == 1
    assert late.stderr.startswith(b"cortexctl: ") and late.stderr.count(b"\n") == 1
