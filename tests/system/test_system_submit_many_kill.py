"""kill -9 of the control process, then of a shard, while SubmitMany calls run (issue 9).

A client submits batches of keyed tasks in a loop and resends a batch whose call
failed (same idempotency keys). Each task appends its key to a file on the node
side. At the end every acknowledged task SUCCEEDED, and the file holds every key
exactly once: nothing acknowledged was lost, nothing ran twice.
"""

import os
import signal
import time
from collections import Counter

import grpc
import pytest

from cortex.v1 import control_pb2 as pb
from cortexctl.client import HubClient, HubSettings, client_tls
from examples.localfleet import start_time, wait_until

pytestmark = pytest.mark.system

TASKS = 500
BATCH = 50


def client(hub) -> HubClient:
    token = hub.admin_token_file.read_text().strip()
    return HubClient(HubSettings(address=hub.control_address, token=token,
                                 tls=client_tls(None, None, None, False),
                                 insecure_loopback=True, timeout_s=10))


class Submitter:
    """SubmitMany in a loop; a failed call is sent again with the same keys. ``kills``
    maps a batch number to what to kill while that batch's first call is in flight."""

    def __init__(self, hub, ran, kills) -> None:
        self.hub, self.ran, self.kills = hub, ran, kills
        self.acked: dict[str, str] = {}  # key -> task id
        self.failed_calls = 0
        self.stop_at = time.monotonic() + 120

    def run(self) -> None:
        with client(self.hub) as c:
            for batch, start in enumerate(range(0, TASKS, BATCH)):
                keys = [f"k-{i}" for i in range(start, start + BATCH)]
                self._submit(c, keys, self.kills.get(batch))

    def _submit(self, c: HubClient, keys: list[str], kill) -> None:
        request = pb.SubmitManyRequest(tasks=[
            pb.SubmitRequest(command=f"echo {k} >> {self.ran}", idempotency_key=k)
            for k in keys])
        while time.monotonic() < self.stop_at:
            call = c._stub.SubmitMany.future(request, timeout=10, metadata=c._metadata)
            if kill is not None:
                kill()  # the call is in flight
                kill = None
            try:
                results = call.result().results
            except grpc.RpcError as e:
                assert e.code() in (grpc.StatusCode.UNAVAILABLE,
                                    grpc.StatusCode.DEADLINE_EXCEEDED), e
                self.failed_calls += 1
                time.sleep(0.2)
                continue
            for key, result in zip(keys, results, strict=True):
                assert result.HasField("submitted"), (key, result)
                self.acked[key] = result.submitted.task.task_id
            return
        raise TimeoutError("the hub did not take a batch within 120 s")


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

    submitter = Submitter(hub, ran, {3: kill_control, 7: kill_shard})
    submitter.run()
    assert len(submitter.acked) == TASKS
    assert submitter.failed_calls >= 1, "the call cut by the control's death is resent"
    print(f"failed calls resent: {submitter.failed_calls}")

    with client(hub) as c:
        def all_ended() -> bool:
            tasks = c.list_tasks(limit=10_000)
            return (len(tasks) >= TASKS
                    and all(t.state in (pb.SUCCEEDED, pb.FAILED, pb.LOST, pb.CANCELLED)
                            for t in tasks))
        wait_until(all_ended, 180, "every task to end", interval_s=0.5)
        tasks = {t.task_id: t for t in c.list_tasks(limit=10_000)}
    assert len(tasks) == TASKS, "one task per key, none created twice"
    for key, task_id in submitter.acked.items():
        task = tasks[task_id]
        assert (task.state, task.idempotency_key) == (pb.SUCCEEDED, key), task
    runs = Counter(ran.read_text().split())
    assert set(runs) == set(submitter.acked), "every acknowledged task ran"
    twice = {k: n for k, n in runs.items() if n != 1}
    assert not twice, f"ran more than once: {twice}"
