"""Test 7: SIGTERM to cortexd with nodes attached: exit 0 within the grace, nothing left."""

import time

import pytest

pytestmark = pytest.mark.system

#: How long a stop with attached (idle) nodes may take.
STOP_GRACE_S = 15.0


def test_sigterm_with_nodes_attached_leaves_nothing(fleet):
    hub = fleet.hub(shards=2)
    nodes = fleet.nodes(hub, 3)
    assert len(hub.info["shards"]) == 2
    started = time.monotonic()
    code = hub.stop(timeout_s=STOP_GRACE_S)
    took = time.monotonic() - started
    assert code == 0
    assert took < STOP_GRACE_S
    assert hub.leftovers() == []
    assert all(n.running() for n in nodes), "nodeagents keep running and retrying"
