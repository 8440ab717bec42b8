"""Test 3: cancelling ``sleep 1000`` leaves no process of the task on the node."""

import uuid

import pytest

from examples.localfleet import wait_until
from examples.proctable import all_pids, cmdline, session_members, stat_fields

pytestmark = pytest.mark.system


def test_cancel_leaves_no_process(ctl, nodes):
    marker = f"marker-{uuid.uuid4().hex}"
    # Not a lone command, so /bin/sh stays (carrying the marker) and sleep is its child.
    task_id = ctl.submit(f"echo ready-{marker}; sleep 1000; echo never-{marker}")
    ctl.wait_state(task_id, ["RUNNING"])

    shells = wait_until(lambda: [p for p in all_pids() if marker in cmdline(p)], 10,
                        "the task's shell in the process table")
    fields = stat_fields(shells[0])
    assert fields is not None
    sid = int(fields[3])

    def sleep_in_session() -> dict[int, str] | None:
        members = session_members(sid)
        return members if any(c.startswith("sleep 1000") for c in members.values()) else None
    wait_until(sleep_in_session, 10, "sleep 1000 in the task's session")

    result = ctl("cancel", task_id)
    assert result.returncode == 0, result.stderr
    out, status = ctl.watch(task_id)
    assert status == 130
    assert f"never-{marker}".encode() not in out
    task = ctl.task(task_id)
    assert task["state"] == "CANCELLED"

    # CANCELLED is reported after the group was killed; allow only for reaping.
    try:
        wait_until(lambda: not session_members(sid), 5, f"session {sid} to be empty")
    except TimeoutError:
        pytest.fail(f"processes of the cancelled task left: {session_members(sid)}")
    assert not [p for p in all_pids() if marker in cmdline(p)]
