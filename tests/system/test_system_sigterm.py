"""Test 7: SIGTERM to cortexd with nodes attached: exit 0 within the grace, nothing left."""

import time

import pytest

pytestmark = pytest.mark.system

#: cortexd's --shutdown-grace-s for this test, and what the exit itself may add to it.
GRACE_S = 5.0
EXIT_SLACK_S = 2.0


def test_sigterm_with_nodes_attached_leaves_nothing(fleet):
    hub = fleet.hub(shards=2, extra_args=["--shutdown-grace-s", str(GRACE_S)])
    nodes = fleet.nodes(hub, 3)
    assert len(hub.info["shards"]) == 2
    started = time.monotonic()
    code = hub.stop(timeout_s=GRACE_S + 30)
    took = time.monotonic() - started
    assert code == 0
    assert took < GRACE_S + EXIT_SLACK_S, f"cortexd took {took:.1f}s to stop"
    assert hub.leftovers() == []
    assert all(n.running() for n in nodes), "nodeagents keep running and retrying"
