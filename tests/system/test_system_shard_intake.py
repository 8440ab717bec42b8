"""The Control port served by the shards (``shard_intake``, issue 9), with a real cortexd.

Two shards share the Control port; clients on many connections submit through it. Plain
submissions are taken in by the shards (the scrape counts them), everything else is
relayed to the control process unchanged: Run (its task id in the headers, its deadline),
Watch, GetTask, a refusal's status and message. A shard killed with SIGKILL while
SubmitMany calls run (both shards, twice) loses no acknowledged task and runs none twice.
"""

import os
import signal
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest

from cortex.v1 import control_pb2 as pb
from cortexctl.client import HubClient, HubSettings, RunDeadline, client_tls
from cortexctl.errors import CtlError
from examples.localfleet import Ctl, start_time, wait_until
from tests.metricskit import scrape, total

pytestmark = pytest.mark.system


def intake_hub(fleet, tmp_path: Path):
    conf = tmp_path / "intake.toml"
    conf.write_text("shard_intake = true\n")
    return fleet.hub(shards=2, extra_args=["--config", str(conf),
                                           "--metrics-listen", "127.0.0.1:0"])


def client(hub) -> HubClient:
    token = hub.admin_token_file.read_text().strip()
    return HubClient(HubSettings(address=hub.control_address, token=token,
                                 tls=client_tls(None, None, None, False),
                                 insecure_loopback=True, timeout_s=10))


@pytest.mark.timeout(240)
def test_the_shards_take_in_plain_submissions_and_relay_every_other_call(fleet, tmp_path):
    hub = intake_hub(fleet, tmp_path)
    address = hub.info["metrics_address"]
    fleet.nodes(hub, 2, capacity=8)
    ctl = Ctl(hub)
    # cortexctl, one process (one connection) per call: the kernel spreads them.
    ids = [ctl.submit(f"echo intake-{i}") for i in range(12)]
    for task_id in ids:
        ctl.wait_state(task_id, ["SUCCEEDED"], timeout_s=60)
    out, code = ctl.watch(ids[0])  # relayed: Watch streams from the control process
    assert code == 0 and out.strip() == b"intake-0"
    with client(hub) as c:
        results = c.submit_many([pb.SubmitRequest(command=f"echo many-{i}",
                                                  idempotency_key=f"m-{i}") for i in range(20)]
                                + [pb.SubmitRequest(command="")])
        assert [r.HasField("submitted") for r in results] == [True] * 20 + [False]
        assert results[20].error.code == "INVALID_ARGUMENT"
        assert "command is required" in results[20].error.message
        again = c.submit(pb.SubmitRequest(command="echo many-0", idempotency_key="m-0"))
        assert again.deduplicated and again.task.task_id == results[0].submitted.task.task_id
        with pytest.raises(CtlError, match="different command"):
            c.submit(pb.SubmitRequest(command="echo other", idempotency_key="m-0"))
        ran = c.run(pb.SubmitRequest(command="echo ran"), wait_s=60)  # relayed whole
        assert ran.task.state == pb.SUCCEEDED and b"ran" in ran.journal.head
        with pytest.raises(RunDeadline) as late:  # the deadline and the headers relayed
            c.run(pb.SubmitRequest(command="sleep 30"), wait_s=1.0)
        assert late.value.task_id.startswith("t-")
        assert c.get_task(late.value.task_id).state in (pb.ASSIGNED, pb.RUNNING)
        c.cancel(late.value.task_id, "done with it")
        with pytest.raises(CtlError, match="environment variable name '1x' is not valid"):
            c.submit(pb.SubmitRequest(command="true", env={"1x": "y"}))  # the shard's check

    def counted() -> bool:
        m = scrape(address)
        return (total(m, "cortex_shard_intake_total", outcome="taken") >= 12 + 20 + 1
                and total(m, "cortex_shard_intake_total", outcome="relayed") >= 3)
    wait_until(counted, 20, "the shards' intake counts (added once a second)")
    metrics = scrape(address)
    per_shard = [total(metrics, "cortex_shard_intake_total", outcome="taken", shard=str(i))
                 for i in (0, 1)]
    print(f"taken per shard: {per_shard}")
    assert total(metrics, "cortex_task_transitions_total", state="SUCCEEDED") >= 12 + 20 + 1


@pytest.mark.timeout(300)
def test_a_shard_killed_during_submit_many_loses_no_acknowledged_task(fleet, tmp_path):
    hub = intake_hub(fleet, tmp_path)
    fleet.nodes(hub, 3, capacity=8)
    ran = tmp_path / "ran.log"
    ran.touch()
    acked: dict[str, str] = {}
    failed_calls = 0
    in_flight = 0  # kills that found their call not answered yet
    killed: list[int] = []
    stop_at = time.monotonic() + 150
    with client(hub) as c:
        for batch in range(10):
            keys = [f"k-{batch}-{i}" for i in range(40)]
            request = pb.SubmitManyRequest(tasks=[
                pb.SubmitRequest(command=f"echo {k} >> {ran}", idempotency_key=k) for k in keys])
            kill = batch in (2, 5)
            while time.monotonic() < stop_at:
                call = c._stub.SubmitMany.future(request, timeout=10, metadata=c._metadata)
                if kill:  # the call is in flight: kill both shards, one holds it
                    in_flight += not call.done()
                    for shard in hub.read_info()["shards"]:
                        os.kill(int(shard["pid"]), signal.SIGKILL)
                        killed.append(int(shard["pid"]))
                    kill = False
                try:
                    results = call.result().results
                except grpc.RpcError as e:
                    assert e.code() in (grpc.StatusCode.UNAVAILABLE,
                                        grpc.StatusCode.DEADLINE_EXCEEDED), e
                    failed_calls += 1
                    time.sleep(0.2)
                    continue
                for key, result in zip(keys, results, strict=True):
                    assert result.HasField("submitted"), (key, result)
                    acked[key] = result.submitted.task.task_id
                break

            def respawned() -> bool:
                pids = [int(s["pid"]) for s in hub.read_info()["shards"]]
                return all(p and p not in killed and start_time(p) is not None for p in pids)
            wait_until(respawned, 60, "the killed shard respawned")
        assert len(acked) == 400

        def all_ended() -> bool:
            tasks = c.list_tasks(limit=10_000)
            return len(tasks) >= 400 and all(
                t.state in (pb.SUCCEEDED, pb.FAILED, pb.LOST, pb.CANCELLED) for t in tasks)
        wait_until(all_ended, 180, "every task to end", interval_s=0.5)
        tasks = {t.task_id: t for t in c.list_tasks(limit=10_000)}
    # A call cut before its request left the client is retried by gRPC itself (then no
    # error is seen); one cut after it fails UNAVAILABLE and is resent with its keys.
    print(f"kills with their call in flight: {in_flight}, calls resent: {failed_calls}")
    assert in_flight >= 1, "a shard was killed while a SubmitMany was in flight"
    assert len(tasks) == 400, "one task per key, none created twice"
    for key, task_id in acked.items():
        assert (tasks[task_id].state, tasks[task_id].idempotency_key) == (pb.SUCCEEDED, key)
    runs = Counter(ran.read_text().split())
    assert set(runs) == set(acked), "every acknowledged task ran"
    assert not {k: n for k, n in runs.items() if n != 1}, "none ran twice"
