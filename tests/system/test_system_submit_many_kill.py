"""kill -9 of the control process, then of a shard, while SubmitMany calls run (issue 9).

A client submits batches of keyed tasks in a loop and resends a batch whose call
failed (same idempotency keys). Each task appends its key to a file on the node
side. At the end every acknowledged task SUCCEEDED, and the file holds every key
exactly once: nothing acknowledged was lost, nothing ran twice.
"""

import os
import signal

import pytest

from examples.localfleet import start_time, wait_until
from tests.hubkit import KeyedSubmitter, admin_client

pytestmark = pytest.mark.system

TASKS = 500
BATCH = 50


@pytest.mark.timeout(300)
def test_kill_control_and_a_shard_during_submit_many(fleet, hub, tmp_path):
    fleet.nodes(hub, 3, capacity=8)
    ran = tmp_path / "ran.log"
    ran.touch()

    old_shards: set[int] = set()

    def kill_control() -> None:
        info = hub.read_info()
        old_shards.update(int(s["pid"]) for s in info["shards"])
        os.kill(info["control_pid"], signal.SIGKILL)

    def kill_shard() -> None:
        # The supervisor restarted the shards with the control process: their new pids.
        def restarted() -> bool:
            pids = [int(s["pid"]) for s in hub.read_info()["shards"]]
            return all(p and p not in old_shards and start_time(p) is not None for p in pids)
        wait_until(restarted, 60, "the restarted shards")
        hub.kill_shard(0)

    submitter = KeyedSubmitter(hub, ran, {3: kill_control, 7: kill_shard}, TASKS, BATCH)
    submitter.run()
    assert len(submitter.acked) == TASKS
    assert submitter.failed_calls >= 1, "the call cut by the control's death is resent"
    print(f"failed calls resent: {submitter.failed_calls}")
    with admin_client(hub) as c:
        submitter.check_every_acked_ran_once(c)
