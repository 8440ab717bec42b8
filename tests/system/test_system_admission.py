"""Attach admission: a hub with a tiny ``admit_per_s`` and 24 nodeagents starting at once.

Every node ends up attached; the ones over budget were answered ``RetryLater`` (the
hub's count and the nodes' own count agree), none saw any other failure, and the hub
never admitted faster than its budget.
"""

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from examples.localfleet import Ctl, log_events, wait_until

pytestmark = pytest.mark.system

NODES = 24
# Over 2 shards: 0.5 attach/s each with a burst of 1, so 24 nodes need at least 22 s —
# longer than starting 24 nodeagents takes even on a loaded machine: some must be told
# RetryLater however the starts spread.
ADMIT_PER_S = 1




def hub_counts(log: Path) -> tuple[int, int]:
    """(admitted, retry_later) summed over the shards' latest ``attach_admission`` lines."""
    latest: dict[int, dict[str, Any]] = {}
    for event in log_events(log, "attach_admission"):
        latest[event["shard"]] = event
    return (sum(e["admitted"] for e in latest.values()),
            sum(e["retry_later"] for e in latest.values()))


@pytest.mark.timeout(180)
def test_attach_storm_is_admitted_at_the_budget_with_retry_later(fleet, tmp_path):
    config = tmp_path / "cortexd.toml"
    config.write_text(f"admit_per_s = {ADMIT_PER_S}\n")
    hub = fleet.hub(shards=2, extra_args=["--config", str(config)])
    nodes = [fleet.node(hub, f"node-{i}") for i in range(1, NODES + 1)]
    ids = [n.node_id for n in nodes]
    Ctl(hub).wait_nodes(ids, timeout_s=120)

    def retry_laters(node: Any) -> list[dict[str, Any]]:
        return [r for r in log_events(node.log_path, "reconnect")
                if r["reason"].startswith("hub asked to retry later")]

    node_retry_laters = sum(len(retry_laters(n)) for n in nodes)
    # The shards log their counters once a second; wait for the last line.
    admitted, hub_retry_laters = wait_until(
        lambda: c if (c := hub_counts(hub.log_path))[1] >= node_retry_laters
        and c[0] >= NODES else None, 10, "the shards' admission counters")
    starts = sorted(datetime.fromisoformat(log_events(n.log_path, "agent_start")[0]["timestamp"])
                    .timestamp() for n in nodes)
    print(f"admission: {NODES} nodes started over {starts[-1] - starts[0]:.1f} s, "
          f"{admitted} admitted, {hub_retry_laters} RetryLater")
    assert node_retry_laters > 0
    assert hub_retry_laters == node_retry_laters
    assert admitted == NODES
    for node in nodes:
        # 0 failed registrations: the only reason any node dialled again was RetryLater.
        reconnects = log_events(node.log_path, "reconnect")
        assert reconnects == retry_laters(node), (node.node_id, reconnects)
        assert not log_events(node.log_path, "auth_failed")
        assert len(log_events(node.log_path, "attach")) == 1
        for r in retry_laters(node):
            assert r["delay_s"] >= 0.2  # the hub's answer, honoured
    # The hub never admitted faster than its budget: at most burst + rate * t in any window
    # (admission time = when the shard logged the attach, less the wait for control).
    stamps = sorted(datetime.fromisoformat(e["timestamp"]).timestamp() - e["welcome_ms"] / 1000
                    for e in log_events(hub.log_path, "node_attached"))
    assert len(stamps) == NODES
    burst = 2  # one per shard
    for i, start in enumerate(stamps):
        for j in range(i + 1, len(stamps)):
            window_s = stamps[j] - start
            assert j - i + 1 <= burst + ADMIT_PER_S * window_s + 1, (i, j, window_s)
