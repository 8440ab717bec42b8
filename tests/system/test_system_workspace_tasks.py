"""Tasks in a workspace (`submit --workspace`, issue 12) with real processes.

A task in a workspace is placed only on a node the workspace is attached to, and starts
once a sync round of the node's copy that began after the task arrived has ended: an
edit made on the hub side just before the submission is what the task sees. What it
writes in the copy reaches the hub's tree. A workspace that does not exist, or is
attached to no node, refuses the submission; a node whose copy cannot sync fails the
attempt with the reason, within the node's --workspace-wait-s.
"""

import hashlib
import json
import os
from pathlib import Path

import grpc
import pytest

from cortex.tokens import bearer
from cortex.v1 import control_pb2, control_pb2_grpc
from examples.localfleet import Ctl, LocalHub, wait_until
from tests.system.test_system_workspace import converged, hub_tree
from tests.tcpproxy import TcpProxy


def attached_copy(ctl: Ctl, hub: LocalHub, name: str, node_id: str, copy: Path) -> Path:
    ctl.ok("workspace", "create", name)
    ht = hub_tree(hub, name)
    (ht / "seed.txt").write_text("seed\n")
    ctl.ok("workspace", "attach", name, "--node", node_id, "--path", str(copy))
    wait_until(lambda: converged(ht, copy) and (copy / "seed.txt").exists(), 60,
               "first sync")
    return ht


@pytest.mark.timeout(240)
def test_a_task_sees_the_hub_edit_made_just_before_and_its_output_reaches_the_hub(
        fleet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    hub = fleet.hub(shards=1)
    ctl = Ctl(hub)
    fleet.nodes(hub, 2)  # node-1 is idle and first in every tie: only node-2 has the copy
    copy = tmp_path / "copy"
    ht = attached_copy(ctl, hub, "w1", "node-2", copy)

    # Edited on the hub side, submitted at once: 32 MiB take the round a while, so a task
    # that did not wait for its round would find the old message or part of the file.
    big = os.urandom(32 << 20)
    (ht / "big.bin").write_bytes(big)
    nonce = os.urandom(8).hex()
    (ht / "msg.txt").write_text(f"edited on the hub {nonce}\n")
    tid = ctl.submit("cat msg.txt; sha256sum big.bin; pwd; echo made by $CORTEX_X > out.txt",
                     "--workspace", "w1", "--env", f"CORTEX_X={nonce}")
    out, status = ctl.watch(tid)
    assert status == 0, out
    text = out.decode()
    assert f"edited on the hub {nonce}" in text, text
    assert hashlib.sha256(big).hexdigest() in text, text
    assert str(copy.resolve()) in text, text  # cwd = the copy's root
    task = ctl.task(tid)
    assert task["node_id"] == "node-2" and task["workspace"] == "w1", task
    assert "workspace" in ctl.ok("get", tid).decode()
    # what it wrote reaches the hub's tree
    wait_until(lambda: (ht / "out.txt").exists()
               and (ht / "out.txt").read_text() == f"made by {nonce}\n", 30, "output on hub")

    # A relative cwd is inside the copy: one made on the hub just before is there (the
    # same round), one missing fails the task, one leaving the copy is refused.
    (ht / "sub" / "dir").mkdir(parents=True)
    tid = ctl.submit("pwd; echo here > f.txt", "--workspace", "w1", "--cwd", "sub/dir")
    out, status = ctl.watch(tid)
    assert status == 0 and str((copy / "sub" / "dir").resolve()) in out.decode(), out
    wait_until(lambda: (ht / "sub" / "dir" / "f.txt").exists(), 30, "sub/dir on the hub")
    tid = ctl.submit("true", "--workspace", "w1", "--cwd", "missing")
    task = ctl.wait_state(tid, ["FAILED", "SUCCEEDED"])
    assert task["state"] == "FAILED" and "'missing' is not a directory" in task["reason"], task
    bad = ctl("submit", "--workspace", "w1", "--cwd", "../up", "--", "true")
    assert bad.returncode != 0 and b"leaves the workspace" in bad.stderr, bad.stderr


@pytest.mark.timeout(240)
def test_a_round_already_under_way_when_the_task_arrives_does_not_count(
        fleet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    hub = fleet.hub(shards=1)
    ctl = Ctl(hub)
    fleet.nodes(hub, 1)
    copy = tmp_path / "copy"
    ht = attached_copy(ctl, hub, "w4", "node-1", copy)
    (ht / "msg.txt").write_text("old\n")
    wait_until(lambda: (copy / "msg.txt").exists(), 30, "old message on the node")
    # A round that planned before the hub's edit: the node pushes 96 MiB in it. (The old
    # WorkspaceMirror.current let that round's end release the task.)
    # The submission goes through a channel opened before, so that it reaches the node
    # well within that round (a cortexctl process takes about a second to start here).
    channel = grpc.insecure_channel(hub.control_address)
    stub = control_pb2_grpc.ControlStub(channel)  # type: ignore[no-untyped-call]
    md = bearer(hub.admin_token_file.read_text().strip())
    stub.ListNodes(control_pb2.ListNodesRequest(), metadata=md, timeout=10)  # connected
    # The hub's edit makes the next round long too (64 MiB to pull before msg.txt is
    # applied): a task released by the end of the round under way would read "old".
    hub_big = tmp_path / "hub-big.bin"
    hub_big.write_bytes(os.urandom(64 << 20))
    (copy / "big.bin").write_bytes(os.urandom(96 << 20))
    blobs = hub.state_dir / "workspaces" / ".blobs"
    wait_until(lambda: any(blobs.rglob("*.part")), 60, "the node's push under way",
               interval_s=0.02)
    hub_big.rename(ht / "hub-big.bin")  # at once (same file system)
    (ht / "msg.txt").write_text("new\n")
    tid = stub.Submit(control_pb2.SubmitRequest(command="cat msg.txt", workspace="w4"),
                      metadata=md, timeout=10).task.task_id
    channel.close()
    assert any(blobs.rglob("*.part")), "the round ended before the task came: no proof"
    out, status = ctl.watch(tid)
    assert status == 0 and out.decode().strip() == "new", out


@pytest.mark.timeout(240)
def test_placement_only_on_attached_nodes_and_refusals(fleet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    hub = fleet.hub(shards=1)
    ctl = Ctl(hub)
    fleet.nodes(hub, 2)
    attached_copy(ctl, hub, "w2", "node-2", tmp_path / "copy")

    # Eight tasks at once (one SubmitMany): without the workspace, least-loaded placement
    # would put half of them on node-1 (capacity 4 each).
    lines = [json.dumps({"command": f"sleep 0.5; echo {i}", "workspace": "w2"})
             for i in range(8)]
    source = tmp_path / "tasks.jsonl"
    source.write_text("\n".join(lines) + "\n")
    ids = [r["task_id"] for r in ctl.json("submit", "--from", str(source))]
    assert len(ids) == 8
    for tid in ids:
        task = ctl.wait_state(tid, ["SUCCEEDED", "FAILED"], timeout_s=90)
        assert task["state"] == "SUCCEEDED" and task["node_id"] == "node-2", task

    for flags, says in [
        (("--workspace", "nope"), b"no workspace 'nope'"),
        (("--workspace", "w2", "--node", "node-1"), b"not attached on node 'node-1'"),
    ]:
        got = ctl("submit", *flags, "--", "true")
        assert got.returncode != 0 and says in got.stderr, got.stderr
        got = ctl("run", *flags, "--", "true")
        assert got.returncode != 0 and says in got.stderr, got.stderr
    ctl.ok("workspace", "create", "lonely")
    got = ctl("submit", "--workspace", "lonely", "--", "true")
    assert got.returncode != 0 and b"attached to no node" in got.stderr, got.stderr
    bulk = tmp_path / "bad.jsonl"
    bulk.write_text(json.dumps({"command": "true", "workspace": "nope"}) + "\n")
    got = ctl("submit", "--from", str(bulk), "--json")
    assert b"no workspace 'nope'" in got.stdout + got.stderr, got
    assert not [t for t in ctl.json("tasks") if t["task_id"] not in ids]  # nothing stored


@pytest.mark.timeout(180)
def test_a_copy_that_cannot_sync_fails_the_task_with_the_reason(fleet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    hub = fleet.hub(shards=1)
    ctl = Ctl(hub)
    host, _, port = hub.control_address.rpartition(":")
    proxy = TcpProxy((host, int(port))).start()  # the node's way to the Control port
    try:
        fleet.node(hub, "node-1", extra_args=["--control", f"127.0.0.1:{proxy.port}",
                                              "--workspace-wait-s", "3"])
        ctl.wait_nodes(["node-1"])
        attached_copy(ctl, hub, "w3", "node-1", tmp_path / "copy")
        proxy.stop()  # the task stream stays up; the copy's rounds cannot reach the hub
        tid = ctl.submit("echo never", "--workspace", "w3")
        task = ctl.wait_state(tid, ["FAILED", "SUCCEEDED"], timeout_s=60)
        assert task["state"] == "FAILED", task
        assert "workspace_failed" in task["reason"] and "w3" in task["reason"], task
        assert "within 3 s" in task["reason"], task
    finally:
        proxy.stop()
