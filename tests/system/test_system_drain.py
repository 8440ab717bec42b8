"""Drain before done (issue 3, item 5), through the real node → hub path: a command that
prints a known line and exits at once, 500 times; every line arrives, byte-exact, and
the hub records the result only with the output complete (a PTY read after the child
exits raises EIO while bytes may still be buffered: the node must read to the end)."""

import time

import pytest

from cortex.v1 import control_pb2 as pb
from cortexctl.client import HubClient, HubSettings, client_tls
from examples.localfleet import wait_until

pytestmark = pytest.mark.system

RUNS = 500


@pytest.mark.timeout(120)
def test_500_short_commands_every_line_arrives(fleet, hub):
    fleet.nodes(hub, 4, capacity=32)
    token = hub.admin_token_file.read_text().strip()
    settings = HubSettings(address=hub.control_address, token=token,
                           tls=client_tls(None, None, None, False), insecure_loopback=True)
    t0 = time.monotonic()
    with HubClient(settings) as c:
        # printf, not echo: the line is the last thing the command does before it exits.
        ids = {c.submit(pb.SubmitRequest(command=f"printf 'drain-line-{i:03d}\\n'")).task.task_id:
               i for i in range(RUNS)}

        def all_done() -> list[pb.Task] | None:
            tasks = [t for t in c.list_tasks(limit=RUNS * 2) if t.task_id in ids]
            return tasks if all(t.state >= pb.SUCCEEDED for t in tasks) else None

        tasks = wait_until(all_done, 90, f"{RUNS} tasks to finish", interval_s=0.2)
        missing = []
        for t in tasks:
            want = f"drain-line-{ids[t.task_id]:03d}\r\n".encode()
            journal = c.journal(t.task_id)
            if (t.state, t.exit_code, journal.head) != (pb.SUCCEEDED, 0, want):
                missing.append((t.task_id, pb.TaskState.Name(t.state), journal.head))
    elapsed = time.monotonic() - t0
    print(f"{RUNS} runs on 4 nodes in {elapsed:.1f} s")
    assert len(tasks) == RUNS
    assert missing == []
