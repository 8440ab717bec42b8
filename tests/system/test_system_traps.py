"""The first-hour traps of issue 13, against real processes: each fails clearly now."""

import subprocess

from examples.localfleet import LocalNode, binary
from nodeagent import exitcodes as agent_exit


def test_a_node_agent_pointed_at_the_control_port_says_so_and_stops(fleet):
    hub = fleet.hub(shards=1)
    node = LocalNode(hub, "node-1", extra_args=["--node-port", hub.control_address])
    fleet.all_nodes.append(node)
    node.start()
    assert node.proc is not None
    code = node.proc.wait(timeout=60)  # before: retried UNIMPLEMENTED forever
    assert code == agent_exit.WRONG_HUB, node.log_tail()
    log = node.log_path.read_text()
    assert f"{hub.control_address} is not a hub's node port" in log
    assert "cortexd --node-listen" in log


def test_cortexctls_environment_does_not_send_a_node_agent_to_the_control_port(fleet, tmp_path):
    hub = fleet.hub(shards=1)
    env = {"PATH": "/usr/bin:/bin", "CORTEX_HUB": hub.control_address,
           "CORTEX_TOKEN_FILE": str(hub.admin_token_file)}
    done = subprocess.run([*binary("nodeagent"), "--node-id", "node-2", "--hub-key",
                           str(hub.hub_key_file), "--state-dir", str(tmp_path / "n2"),
                           "--insecure-loopback"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == agent_exit.CONFIG
    assert "CORTEX_HUB is set, but that is cortexctl's setting" in done.stderr
