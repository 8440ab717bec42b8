"""Boot failures halt with their documented exit code; a hung shard is replaced.

Exit codes (cortexd/exitcodes.py): 2 configuration, 5 port in use by another
program. A shard that stops proving it is alive (SIGSTOP) is killed and
respawned by the supervisor; its nodes reconnect.
"""

import os
import signal
import socket
import subprocess

import pytest

from examples.localfleet import Ctl, binary, shm_segments, start_time, wait_until

pytestmark = pytest.mark.system


def run_cortexd(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*binary("cortexd"), *args], capture_output=True, text=True,
                          timeout=timeout_s, stdin=subprocess.DEVNULL)


def test_bad_config_exits_2_with_the_setting_named(tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text("shards = 'two'\n")
    r = run_cortexd("--config", str(conf), "--state-dir", str(tmp_path / "s"))
    assert r.returncode == 2, r.stderr
    assert "setting shards" in r.stderr
    r = run_cortexd("--state-dir", str(tmp_path / "s"), "--node-listen", "0.0.0.0:0",
                    "--insecure-loopback")
    assert r.returncode == 2
    assert "plaintext is allowed only on loopback" in r.stderr


def test_unreadable_key_exits_2_and_leaves_nothing(tmp_path):
    state = tmp_path / "s"
    state.mkdir()
    key = state / "hub.key"
    key.write_text("not a key")
    os.chmod(key, 0o600)
    before = shm_segments()
    r = run_cortexd("--state-dir", str(state), "--insecure-loopback", "--shards", "1",
                    "--node-listen", "127.0.0.1:0", "--control-listen", "127.0.0.1:0")
    assert r.returncode == 2, r.stderr
    assert "not a PEM Ed25519 private key" in r.stderr
    assert not (state / "cortexd.json").exists()
    assert shm_segments() - before == set()


def test_port_held_by_another_program_exits_5(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        r = run_cortexd("--state-dir", str(tmp_path / "s"), "--insecure-loopback",
                        "--shards", "1", "--node-listen", f"127.0.0.1:{port}",
                        "--control-listen", "127.0.0.1:0")
    assert r.returncode == 5, r.stderr
    assert f"127.0.0.1:{port} is in use" in r.stderr


def test_stopped_shard_is_killed_and_replaced(fleet, tmp_path):
    # child_timeout_s is the liveness limit; keep it short for the test.
    conf = tmp_path / "c.toml"
    conf.write_text("child_timeout_s = 3.0\n")
    hub = fleet.hub(shards=2, extra_args=["--config", str(conf)])
    ctl = Ctl(hub)
    node = fleet.node(hub, "node-1")
    ctl.wait_nodes([node.node_id])
    shard = next(n["shard"] for n in ctl.json("nodes"))
    pid = hub.shard_pid(shard)
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: start_time(pid) is None, 30, f"stopped shard {pid} to be killed")
    finally:
        if start_time(pid) is not None:
            os.kill(pid, signal.SIGCONT)

    def replaced() -> bool:
        shards = {s["shard"]: s for s in ctl.json("shards")}
        return shards[shard]["alive"] and shards[shard]["pid"] != pid
    wait_until(replaced, 30, f"shard {shard} to be respawned")
    ctl.wait_nodes([node.node_id])
    run = ctl("submit", "--follow", "--", "echo after the hang")
    assert (run.returncode, run.stdout) == (0, b"after the hang\r\n"), run.stderr
    assert hub.running()
    assert hub.stop() == 0
