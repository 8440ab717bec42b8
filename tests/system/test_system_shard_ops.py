"""Shard and node management under load (issue 13, part 4).

Tasks are submitted continuously while shard 0 is drained, restarted, and the
host is scaled 2 -> 3 -> 1 shard processes. Then: every submitted task ended
SUCCEEDED (nothing lost), each command ran exactly once
(a line per run in a file the tasks append to) and every output is byte-exact.
"""

import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from cortex.v1 import control_pb2 as pb
from cortexctl.client import HubClient, HubSettings, client_tls
from examples.localfleet import Ctl, wait_until
from tests.metricskit import scrape, total

pytestmark = pytest.mark.system

LINES = 6


def command(mark: str, runs: Path) -> str:
    return (f"echo {mark} >> {runs}; for i in $(seq 1 {LINES}); do echo {mark} line $i; "
            f"sleep 0.15; done; seq 1 1500")


def expected(mark: str) -> bytes:
    body = "".join(f"{mark} line {i}\r\n" for i in range(1, LINES + 1))
    return (body + "".join(f"{i}\r\n" for i in range(1, 1501))).encode()


class Submitter(threading.Thread):
    """Submits a task every ``period_s`` until stopped; remembers {task id: mark}."""

    def __init__(self, client: HubClient, runs: Path, period_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.client, self.runs, self.period_s = client, runs, period_s
        self.tasks: dict[str, str] = {}
        self.errors: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.halt.is_set():
            n += 1
            mark = f"m{n:05d}"
            try:
                resp = self.client.submit(pb.SubmitRequest(command=command(mark, self.runs)))
                self.tasks[resp.task.task_id] = mark
            except Exception as e:  # counted: a submission refused during an operation
                self.errors.append(f"{mark}: {e}")
            self.halt.wait(self.period_s)


def operation(ctl: Ctl, *args: str, timeout_s: float = 240.0) -> list[dict]:
    result = ctl(*args, "--json", timeout_s=timeout_s)
    lines = [json.loads(line) for line in result.stdout.decode().splitlines() if line]
    assert lines and lines[-1]["done"], (args, result.stdout, result.stderr)
    assert lines[-1]["ok"] and result.returncode == 0, (args, lines[-1], result.stderr)
    return lines


def shards(ctl: Ctl) -> dict[int, dict]:
    return {s["shard"]: s for s in ctl.json("shards")}


@pytest.mark.timeout(600)
def test_drain_restart_and_scale_under_load_lose_nothing(fleet, tmp_path):
    hub = fleet.hub(shards=2, extra_args=["--metrics-listen", "127.0.0.1:0"])
    ctl = Ctl(hub)
    nodes = fleet.nodes(hub, 4, capacity=4)
    node_ids = [n.node_id for n in nodes]
    runs = tmp_path / "runs.txt"
    runs.touch()
    client = HubClient(HubSettings(hub.control_address, hub.admin_token_file.read_text().strip(),
                                   client_tls(None, None, None, False), insecure_loopback=True))
    submitter = Submitter(client, runs)
    submitter.start()
    try:
        def first_tasks() -> bool:
            assert not submitter.errors, submitter.errors[:3]
            return len(submitter.tasks) >= 10
        wait_until(first_tasks, 60, "the first tasks")

        # drain shard 0: its nodes move, it takes none until restarted
        drain = operation(ctl, "shards", "drain", "0")
        assert any(p["phase"] in ("moving", "waiting") for p in drain[:-1]) or len(drain) >= 2
        ctl.wait_nodes(node_ids)
        assert all(n["shard"] != 0 for n in ctl.json("nodes") if n["attached"])
        assert shards(ctl)[0]["draining"] and shards(ctl)[0]["alive"]

        operation(ctl, "shards", "restart", "0")
        assert not shards(ctl)[0]["draining"]

        operation(ctl, "shards", "scale", "3")
        assert sorted(shards(ctl)) == [0, 1, 2] and all(s["alive"] for s in shards(ctl).values())
        operation(ctl, "shards", "rebalance", "--rounds", "3")  # best effort: ok or uneven
        operation(ctl, "shards", "scale", "1")
        assert sorted(shards(ctl)) == [0]
        assert len(hub.read_info()["shards"]) == 1
        ctl.wait_nodes(node_ids, timeout_s=60)
        assert {n["shard"] for n in ctl.json("nodes") if n["attached"]} == {0}
        # The removed shards' gauges left the scrape; the one left counts every node.
        address = hub.info["metrics_address"]
        wait_until(lambda: total(scrape(address), "cortex_nodes_attached") == 4, 20,
                   "4 nodes counted by the one shard left")
        after = scrape(address)
        assert total(after, "cortex_shards_alive") == 1
        assert {dict(ls).get("shard") for name, ls in after
                if name == "cortex_nodes_attached"} <= {"0"}
        time.sleep(1.0)  # a few more submissions on the one shard left
    finally:
        submitter.halt.set()
        submitter.join(10)
    assert not submitter.errors, submitter.errors[:5]
    tasks = dict(submitter.tasks)
    assert len(tasks) >= 20

    def all_ended() -> bool:
        return all(client.get_task(t).state >= pb.SUCCEEDED for t in tasks)
    try:
        wait_until(all_ended, 180, f"{len(tasks)} tasks to end", interval_s=1.0)
    except TimeoutError:
        stuck = [client.get_task(t) for t in tasks]
        raise AssertionError("tasks that never ended: " + "; ".join(
            f"{t.task_id} {pb.TaskState.Name(t.state)} attempt {t.attempt} on "
            f"{t.node_id or '-'} ({t.reason})" for t in stuck if t.state < pb.SUCCEEDED)
            ) from None
    for task_id, mark in tasks.items():
        task = client.get_task(task_id)
        # An attempt the node refused (capacity, right after a move) is retried: a later
        # attempt is allowed; a command that ran twice is not (the runs file below).
        assert pb.TaskState.Name(task.state) == "SUCCEEDED", task_id
        out = b"".join(e.output.data for e in client.watch(task_id) if e.HasField("output"))
        assert out == expected(mark), task_id
    ran = Counter(runs.read_text().split())
    assert set(ran) == set(tasks.values()), "a task did not run (or ran unsubmitted)"
    assert max(ran.values()) == 1, [m for m, c in ran.items() if c > 1][:5]
    client.close()


@pytest.mark.timeout(180)
def test_node_drain_show_undrain_and_deadline(fleet):
    hub = fleet.hub(shards=2)
    ctl = Ctl(hub)
    (node,) = fleet.nodes(hub, 1, capacity=4)
    short = ctl.submit("sleep 1; echo short", "--node", node.node_id)
    long = ctl.submit("sleep 300", "--node", node.node_id)
    ctl.wait_state(short, ["RUNNING"])
    ctl.wait_state(long, ["RUNNING"])

    result = ctl("nodes", "drain", node.node_id, "--deadline", "4", "--json", timeout_s=60)
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert result.returncode == 0 and lines[-1]["done"] and lines[-1]["ok"], result
    assert lines[-1]["counts"]["cancelled"] == 1, lines[-1]
    assert ctl.task(short)["state"] == "SUCCEEDED"  # running ones finish
    assert ctl.task(long)["state"] == "CANCELLED"  # the rest at the deadline

    shown = json.loads(ctl.ok("nodes", "show", node.node_id, "--json"))
    assert shown["held"] and shown["draining"] and shown["running_tasks"] == []
    queued = ctl.submit("echo after", "--node", node.node_id)
    time.sleep(2)  # a drained node takes no new task: it must still wait
    assert ctl.task(queued)["state"] == "QUEUED"
    text = ctl.ok("nodes", "show", node.node_id).decode()
    assert "held:" in text and "True" in text

    assert b"takes tasks again" in ctl.ok("nodes", "undrain", node.node_id)
    out, status = ctl.watch(queued, timeout_s=60)
    assert (status, out) == (0, b"after\r\n")
    assert not json.loads(ctl.ok("nodes", "show", node.node_id, "--json"))["held"]
    missing = ctl("nodes", "show", "no-such-node")
    assert missing.returncode != 0 and b"no-such-node" in missing.stderr
