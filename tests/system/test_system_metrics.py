"""Prometheus on a hub host: one /metrics for every hub process, checked against the run.

A hub with two shards and two nodes runs a batch of tasks; the scrape's counters
grow by exactly the run's own counts (tasks finished, dispatch and run latencies
observed, output bytes). A shard killed with SIGKILL and respawned leaves the
totals standing, counts a child restart, and its nodes are counted again once
they re-attach. Every metric the Grafana dashboard names is in the scrape.
"""

import time

import pytest

from examples.localfleet import Ctl, log_events, wait_until
from tests.metricskit import dashboard_metrics, names, scrape, total

pytestmark = pytest.mark.system

TASKS = 24


def _node_metrics_address(node) -> str:
    def port() -> int | None:
        events = log_events(node.log_path, "metrics_listening")
        return events[0]["port"] if events else None
    return f"127.0.0.1:{wait_until(port, 20, 'the node agent metrics port')}"


@pytest.mark.timeout(180)
def test_metrics_follow_the_run_and_survive_a_shard_respawn(fleet):
    hub = fleet.hub(shards=2, extra_args=["--metrics-listen", "127.0.0.1:0"])
    address = hub.info["metrics_address"]
    ctl = Ctl(hub)
    first = fleet.node(hub, "node-1", extra_args=["--metrics-listen", "127.0.0.1:0"])
    fleet.node(hub, "node-2")
    ctl.wait_nodes(["node-1", "node-2"])
    wait_until(lambda: total(scrape(address), "cortex_nodes_attached") == 2, 20,
               "two nodes counted by the shards")
    before = scrape(address)

    tasks = [ctl.submit(f"echo metrics-{i}") for i in range(TASKS)]
    for task_id in tasks:
        ctl.wait_state(task_id, ["SUCCEEDED"], timeout_s=60)
    out_bytes = sum(ctl.task(t)["output_bytes"] for t in tasks)
    after = scrape(address)

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert grew("cortex_task_transitions_total", state="SUCCEEDED") == TASKS
    assert grew("cortex_task_transitions_total", state="ASSIGNED") == TASKS
    assert grew("cortex_task_transitions_total", state="RUNNING") == TASKS
    assert grew("cortex_task_dispatch_latency_seconds_count") == TASKS
    assert grew("cortex_task_run_seconds_count") == TASKS
    assert grew("cortex_output_bytes_total") == out_bytes > 0
    assert grew("cortex_store_batch_rows_sum") >= 3 * TASKS  # every transition committed
    # The shards wrote the node frames (cortexd/shards/writes.py): every task's Started and
    # Finished at least, none failed (a shard adds its counts once a second).
    written = total(before, "cortex_shard_writes_total", outcome="written")
    wait_until(lambda: total(scrape(address), "cortex_shard_writes_total",
                             outcome="written") - written >= 2 * TASKS, 10,
               "the shards' writes counted")
    assert grew("cortex_shard_writes_total", outcome="failed") == 0
    assert total(after, "cortex_store_reachable") == 1
    assert total(after, "cortex_tasks", state="QUEUED") == 0
    assert total(after, "cortex_shards_alive") == 2
    assert total(after, "cortex_node_attaches_total") >= 2
    labels = {k for (_, ls) in after for k, _ in ls}
    assert not labels & {"node", "node_id", "task", "task_id"}, labels

    node = scrape(_node_metrics_address(first))
    ran_here = sum(1 for t in tasks if ctl.task(t)["node_id"] == "node-1")
    assert total(node, "cortexnode_tasks_finished_total") == ran_here

    missing = dashboard_metrics() - names(after) - names(node)
    assert not missing, f"the dashboard names metrics no process exports: {sorted(missing)}"

    # A shard dies: its counters stay in the aggregate, the restart is counted, and its
    # nodes are counted again after they re-attach (its dead pid's gauges are gone).
    hub.kill_shard(0)
    wait_until(lambda: total(scrape(address), "cortex_child_restarts_total",
                             child="shard-0") == 1, 30, "the restart of shard 0 counted")
    wait_until(lambda: total(scrape(address), "cortex_nodes_attached") == 2, 60,
               "both nodes counted again after the respawn")
    later = scrape(address)
    for name in ("cortex_task_transitions_total", "cortex_node_attaches_total",
                 "cortex_node_frames_total", "cortex_output_bytes_total"):
        assert total(later, name) >= total(after, name), name


@pytest.mark.timeout(180)
def test_scrapes_during_a_steady_run_follow_the_runs_own_counts(fleet, tmp_path):
    """Scraped while tasks are submitted and finish, not only after: each scrape's
    SUCCEEDED transitions lie between the run's own count just before the scrape and
    just after it (the store's count through the API), and never go back."""
    import threading

    from cortex.v1 import control_pb2 as pb
    from cortexctl.client import HubClient, HubSettings, client_tls

    hub = fleet.hub(shards=2, extra_args=["--metrics-listen", "127.0.0.1:0"])
    address = hub.info["metrics_address"]
    fleet.nodes(hub, 2)
    client = HubClient(HubSettings(hub.control_address, hub.admin_token_file.read_text().strip(),
                                   client_tls(None, None, None, False), insecure_loopback=True))
    base = total(scrape(address), "cortex_task_transitions_total", state="SUCCEEDED")
    halt = threading.Event()
    submitted: list[str] = []

    def submit() -> None:
        while not halt.is_set() and len(submitted) < 200:
            submitted.append(client.submit(pb.SubmitRequest(command="echo steady")).task.task_id)
            halt.wait(0.05)

    def succeeded() -> int:
        return sum(1 for t in client.list_tasks("SUCCEEDED", limit=1000))

    thread = threading.Thread(target=submit, daemon=True)
    thread.start()
    try:
        seen = []
        for _ in range(8):
            lo = succeeded()
            grew = total(scrape(address), "cortex_task_transitions_total",
                         state="SUCCEEDED") - base
            hi = succeeded()
            assert lo <= grew <= hi, (lo, grew, hi)
            seen.append(grew)
            time.sleep(0.5)  # the run goes on between scrapes
        assert seen == sorted(seen) and seen[-1] > seen[0], seen
    finally:
        halt.set()
        thread.join(10)
    wait_until(lambda: succeeded() == len(submitted), 60, "every task finished")
    final = total(scrape(address), "cortex_task_transitions_total", state="SUCCEEDED") - base
    assert final == len(submitted)
    client.close()
