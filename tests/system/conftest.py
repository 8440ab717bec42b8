"""Fixtures that run real cortexd, nodeagent and cortexctl processes on loopback.

``fleet`` owns every process a test starts and, whatever the outcome, kills what
is still running by pid (nodes, then hubs with all their children, then any
task process the nodes left). When a test failed it prints the logs' tails.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.localfleet import Ctl, LocalHub, LocalNode, tail


class Fleet:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.hubs: list[LocalHub] = []
        self.all_nodes: list[LocalNode] = []

    def hub(self, shards: int = 2, **kwargs) -> LocalHub:
        """A started cortexd on free loopback ports."""
        hub = LocalHub(self.base / f"hub{len(self.hubs)}", shards=shards, **kwargs)
        self.hubs.append(hub)
        return hub.start()

    def node(self, hub: LocalHub, node_id: str, **kwargs) -> LocalNode:
        node = LocalNode(hub, node_id, **kwargs)
        self.all_nodes.append(node)
        return node.start()

    def nodes(self, hub: LocalHub, count: int, capacity: int = 4) -> list[LocalNode]:
        """``count`` nodes (node-1, node-2, …), started and attached."""
        nodes = [self.node(hub, f"node-{i}", labels={"zone": f"z{i}"}, capacity=capacity)
                 for i in range(1, count + 1)]
        Ctl(hub).wait_nodes([n.node_id for n in nodes])
        return nodes

    def teardown(self, failed: bool) -> None:
        if failed:
            self.print_logs()
        for node in self.all_nodes:
            node.kill()
        for hub in self.hubs:
            hub.kill()

    def print_logs(self) -> None:
        for hub in self.hubs:
            for log in sorted(hub.log_dir.glob("*.log")):
                print(f"\n----- {log} -----\n{tail(log, 60)}")


@pytest.fixture
def fleet(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    report = getattr(request.node, "report_call", None)
    f.teardown(failed=report is None or report.failed)


@pytest.fixture
def hub(fleet: Fleet) -> LocalHub:
    return fleet.hub()


@pytest.fixture
def nodes(fleet: Fleet, hub: LocalHub) -> list[LocalNode]:
    return fleet.nodes(hub, 3)


@pytest.fixture
def ctl(hub: LocalHub) -> Ctl:
    return Ctl(hub)
