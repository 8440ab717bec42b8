"""Test 8: a second cortexd on the same node port exits 4 with a message naming the port."""

import subprocess

import pytest

from examples.localfleet import LocalHub

pytestmark = pytest.mark.system


def test_second_cortexd_on_the_same_node_port_is_refused(hub, ctl, fleet, tmp_path):
    fleet.node(hub, "node-1")
    ctl.wait_nodes(["node-1"])
    second = LocalHub(tmp_path / "second", shards=1, node_port=hub.node_port)
    second.state_dir.mkdir(parents=True)
    fleet.hubs.append(second)  # killed with its children at teardown if it did start
    second.proc = subprocess.Popen(second.command(), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        out, _ = second.proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the second cortexd did not exit: it shares the node port")
    output = out.decode(errors="replace")
    assert second.proc.returncode == 4, output
    assert str(hub.node_port) in output, output

    # The first one was not disturbed.
    assert hub.running()
    run = ctl("submit", "--follow", "--", "echo still the only one")
    assert (run.returncode, run.stdout) == (0, b"still the only one\r\n"), run.stderr
