"""The first-hour traps of issue 13, against real processes: each fails clearly now."""

import subprocess

import grpc
import pytest

from cortex.tokens import bearer
from cortex.v1 import control_pb2 as cpb
from cortex.v1 import control_pb2_grpc
from examples.localfleet import Ctl, LocalNode, binary, wait_until
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


def test_listings_page_and_never_carry_a_whole_command(fleet):
    """Twenty 60 KB commands (1.2 MB) used to make ListTasks exceed the 1 MiB message
    limit, so `cortexctl tasks` failed until newer tasks pushed them out (issue 13)."""
    hub = fleet.hub(shards=1)
    ctl = Ctl(hub)
    big = [f"echo {i}; : " + "x" * 60_000 for i in range(20)]
    ids = [ctl.submit(command, "--node", "nowhere") for command in big]
    small = [ctl.submit(f"echo small {i}", "--node", "nowhere") for i in range(5)]
    listed = ctl.json("tasks", "--limit", "200")
    assert [t["task_id"] for t in listed] == list(reversed(ids + small))
    by_id = {t["task_id"]: t for t in listed}
    for tid, command in zip(ids, big, strict=True):
        assert by_id[tid]["command_truncated"] is True
        assert command.startswith(by_id[tid]["command"]) and len(by_id[tid]["command"]) <= 1024
    assert by_id[small[0]]["command_truncated"] is False
    table = ctl.ok("tasks").decode()
    assert ids[0] in table and small[-1] in table
    assert ctl.task(ids[0])["command"] == big[0]  # get has the whole command
    assert ctl.ok("get", ids[0]).decode().count("x") >= 60_000

    # pages by hand: the tokens walk the same order without a gap or a repeat
    token = hub.admin_token_file.read_text().strip()
    seen: list[str] = []
    with grpc.insecure_channel(hub.control_address) as channel:
        stub = control_pb2_grpc.ControlStub(channel)
        page_token = ""
        while True:
            page = stub.ListTasks(cpb.ListTasksRequest(limit=7, page_token=page_token),
                                  metadata=bearer(token), timeout=10)
            assert len(page.tasks) <= 7
            seen += [t.task_id for t in page.tasks]
            page_token = page.next_page_token
            if not page_token:
                break
        assert seen == list(reversed(ids + small))
        with pytest.raises(grpc.RpcError) as e:
            stub.ListTasks(cpb.ListTasksRequest(page_token="not-a-token"),
                           metadata=bearer(token), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _attached(ctl: Ctl, node_id: str) -> bool:
    return any(n["node_id"] == node_id and n["attached"] for n in ctl.json("nodes"))


def test_re_enrolling_or_revoking_a_credential_takes_effect_in_the_running_hub(fleet):
    """Issue 13: a re-enrolled node's old token kept working in a running hub, and there
    was no list or revoke of credentials."""
    hub = fleet.hub(shards=1, extra_args=["--heartbeat-interval-ms", "300"])
    ctl = Ctl(hub)
    fleet.node(hub, "node-1")
    ctl.wait_nodes(["node-1"])
    listed = {(c["name"], c["role"]): c for c in ctl.json("tokens", "ls")}
    assert listed[("node-1", "node")]["attached"] is True
    assert ("admin", "admin") in listed and len(listed[("node-1", "node")]["fingerprint"]) == 12
    assert "ctk_" not in ctl.ok("tokens", "ls").decode()  # never a token

    # Re-enrolling node-1 (the hub keeps running) revokes the token its agent holds: the
    # stream is dropped at the next heartbeat and the old token is refused from then on.
    hub.enroll("node-1")
    wait_until(lambda: not _attached(ctl, "node-1"), 30, "node-1's stream to be dropped")
    old = Ctl(hub)
    assert old("nodes").returncode == 0  # the admin token was not touched

    # Revoke through the API: node-2 is attached, then revoked, then dropped.
    fleet.node(hub, "node-2")
    ctl.wait_nodes(["node-2"])
    out = ctl.ok("tokens", "revoke", "node-2").decode()
    assert out.startswith("revoked node node-2 ") and "dropped at its next heartbeat" in out
    wait_until(lambda: not _attached(ctl, "node-2"), 30, "node-2's stream to be dropped")
    assert ("node-2", "node") not in {(c["name"], c["role"]) for c in ctl.json("tokens", "ls")}
    node2_log = hub.log_dir / "nodeagent-node-2.log"
    wait_until(lambda: "credential was revoked or replaced" in node2_log.read_text(), 30,
               "node-2's agent to be told why")
    again = ctl("tokens", "revoke", "node-2")
    assert again.returncode == 1 and b"credential 'node-2' not found" in again.stderr
    own = ctl("tokens", "revoke", "admin")
    assert own.returncode == 1 and b"the credential this call is made with" in own.stderr
    assert ctl("nodes").returncode == 0


def test_a_node_with_another_hubs_key_is_told_at_attach_and_stops(fleet, tmp_path):
    """Issue 13: a wrong --hub-key attached as healthy, then refused every task."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from cortex.envelope import public_key_pem

    hub = fleet.hub(shards=1)
    wrong = tmp_path / "other-hub.pub"
    wrong.write_bytes(public_key_pem(Ed25519PrivateKey.generate()))
    node = LocalNode(hub, "node-1", extra_args=["--hub-key", str(wrong)])
    fleet.all_nodes.append(node)
    node.start()
    assert node.proc is not None
    assert node.proc.wait(timeout=60) == agent_exit.WRONG_HUB, node.log_tail()
    log = node.log_path.read_text()
    assert "every task it sends would be refused (bad_signature)" in log
    assert f"--hub-key {wrong}" in log
    # the right key attaches (and says nothing of the sort)
    good = fleet.node(hub, "node-2")
    Ctl(hub).wait_nodes(["node-2"])
    assert "hub_key_unproven" not in good.log_path.read_text()


def test_a_task_no_node_can_take_says_why_and_honours_a_queue_timeout(fleet):
    """Issue 13: such a task waited silently in QUEUED and --follow hung with no word."""
    hub = fleet.hub(shards=1)
    ctl = Ctl(hub)
    fleet.node(hub, "node-1", capacity=1)
    ctl.wait_nodes(["node-1"])
    gpu = ctl.submit("true", "--selector", "gpu=a100")
    [listed] = [t for t in ctl.json("tasks") if t["task_id"] == gpu]
    assert (listed["state"], listed["queue_wait"]) == ("QUEUED", "no_match")
    assert "selector gpu=a100" in listed["queue_reason"]
    assert "QUEUED (no node matches)" in ctl.ok("tasks").decode()
    assert "waiting:" in (detail := ctl.ok("get", gpu).decode()) and "gpu=a100" in detail

    blocker = ctl.submit("sleep 30", "--node", "node-1")
    ctl.wait_state(blocker, ["RUNNING"])
    busy = ctl.submit("true", "--node", "node-1")
    assert ctl.task(busy)["queue_wait"] == "busy"
    assert "node node-1 is busy (1/1 running)" in ctl.task(busy)["queue_reason"]

    # --follow says why it waits, and the queue timeout ends it with the reason
    followed = ctl("submit", "--follow", "--queue-timeout", "2", "--node", "ghost", "--",
                   "true", timeout_s=60)
    err = followed.stderr.decode()
    assert "waits in QUEUED: node ghost is unknown" in err, err
    assert "FAILED" in err and "queue timeout: QUEUED for 2s; node ghost is unknown" in err
    assert followed.returncode == 1  # FAILED without an exit code
    ctl.ok("cancel", blocker)


def test_waiting_for_input_shows_in_tasks_get_and_watch(fleet):
    """Issue 13: a task at a prompt showed as a plain RUNNING in every text view."""
    hub = fleet.hub(shards=1)
    ctl = Ctl(hub)
    fleet.node(hub, "node-1")
    ctl.wait_nodes(["node-1"])
    tid = ctl.submit("python3 -c 'import getpass; getpass.getpass()'; echo done")
    wait_until(lambda: "(input)" in ctl.ok("tasks").decode(), 60, "tasks to show (input)")
    assert "RUNNING (input)" in ctl.ok("tasks").decode()
    assert ctl.task(tid)["waiting_for_input"] == "password"
    detail = ctl.ok("get", tid).decode()
    assert "for input (password" in detail and f"cortexctl input {tid} TEXT" in detail
    watch = subprocess.Popen([*binary("cortexctl"), "--hub", hub.control_address,
                              "--token-file", str(hub.admin_token_file), "--insecure-loopback",
                              "watch", tid], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL)
    try:
        assert watch.stderr is not None
        line = watch.stderr.readline().decode()  # the first word watch says on stderr
        assert f"task {tid} waits for input (password" in line, line
        ctl.ok("input", tid, "secret")
        out, _ = watch.communicate(timeout=60)
        assert watch.returncode == 0 and b"done" in out
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()


def test_a_cancelled_task_shows_its_signal_and_the_status_the_cli_exits_with(fleet):
    """Issue 13: a cancelled task showed exit code -2 while the CLI exited 130."""
    hub = fleet.hub(shards=1)
    ctl = Ctl(hub)
    fleet.node(hub, "node-1")
    ctl.wait_nodes(["node-1"])
    tid = ctl.submit("sleep 60")
    ctl.wait_state(tid, ["RUNNING"])
    ctl.ok("cancel", tid)
    _, status = ctl.watch(tid)
    assert status == 130
    task = ctl.task(tid)
    assert (task["state"], task["exit_code"]) == ("CANCELLED", -2)
    assert "-2 (killed by SIGINT; cortexctl watch exits 130)" in ctl.ok("get", tid).decode()
    assert "-2 (SIGINT)" in ctl.ok("tasks").decode()


def test_cortexctl_pointed_at_the_node_port_says_so(fleet):
    hub = fleet.hub(shards=1)
    done = subprocess.run([*binary("cortexctl"), "--hub", hub.node_address, "--token-file",
                           str(hub.admin_token_file), "--insecure-loopback", "tasks"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "is it the hub's node port? cortexctl --hub (CORTEX_HUB) is the Control port" in (
        done.stderr), done.stderr
