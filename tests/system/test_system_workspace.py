"""Workspaces with real processes: cortexd, nodeagent (--control) and cortexctl.

The hub's copy is edited in place (as an agent on the hub would), the node's copy as a
task would; convergence is checked by tree digests of both directories (the scanner
both sides use), waited for by polling the directories (the sync's effect is files).
"""

import os
from pathlib import Path

import pytest

from cortex.wsmerge import tree_digest
from cortex.wstree import TreeScanner
from examples.localfleet import Ctl, LocalHub, wait_until


def digest(root: Path) -> str:
    return tree_digest(TreeScanner(root).scan())


def hub_tree(hub: LocalHub, name: str) -> Path:
    return hub.state_dir / "workspaces" / "default" / name / "tree"


def converged(a: Path, b: Path) -> bool:
    return a.is_dir() and b.is_dir() and digest(a) == digest(b)


def make_source(root: Path) -> None:
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "empty" / "dir").mkdir(parents=True)
    (root / "src" / "main.py").write_text("print('hello')\n")
    (root / "src" / "pkg" / "data.bin").write_bytes(os.urandom(3 << 20))  # 3 chunks
    run = root / "run.sh"
    run.write_text("#!/bin/sh\necho run\n")
    run.chmod(0o755)
    (root / "link").symlink_to("src/main.py")
    (root / ".cortexignore").write_text("*.log\nbuild/\n")
    (root / "noise.log").write_text("ignored\n")


@pytest.mark.timeout(180)
def test_first_sync_then_edits_both_ways_rename_and_an_escaping_link(fleet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    hub = fleet.hub(shards=1)
    ctl = Ctl(hub)
    node = fleet.nodes(hub, 1)[0]
    src = tmp_path / "src-tree"
    make_source(src)
    ctl.ok("workspace", "create", "w1", "--from", str(src))
    ht = hub_tree(hub, "w1")
    assert digest(ht) == digest(src) and not (ht / "noise.log").exists()
    copy = tmp_path / "node-copy"
    ctl.ok("workspace", "attach", "w1", "--node", node.node_id, "--path", str(copy))
    wait_until(lambda: converged(ht, copy), 60, "first sync")
    assert os.access(copy / "run.sh", os.X_OK) and (copy / "empty" / "dir").is_dir()
    assert os.readlink(copy / "link") == "src/main.py"

    # node -> hub: an edit, a new file, an exec bit
    (copy / "src" / "main.py").write_text("print('edited on the node')\n")
    (copy / "new.txt").write_text("new\n")
    wait_until(lambda: (ht / "new.txt").exists() and converged(ht, copy), 30, "node edit")
    assert (ht / "src" / "main.py").read_text() == "print('edited on the node')\n"
    # hub -> node
    (ht / "hub.txt").write_text("from the hub\n")
    (ht / "run.sh").chmod(0o644)
    wait_until(lambda: (copy / "hub.txt").exists() and converged(ht, copy), 30, "hub edit")
    assert not os.access(copy / "run.sh", os.X_OK)
    # a rename on the node (the bytes are already on the hub: nothing pushed again)
    (copy / "src" / "pkg" / "data.bin").rename(copy / "src" / "moved.bin")
    wait_until(lambda: (ht / "src" / "moved.bin").exists()
               and not (ht / "src" / "pkg" / "data.bin").exists(), 30, "rename")
    # a symlink leaving the root is refused: never on the hub, named in status
    (copy / "escape").symlink_to("/etc/passwd")
    (copy / "after.txt").write_text("after\n")
    wait_until(lambda: (ht / "after.txt").exists(), 30, "sync after the escaping link")
    assert not os.path.lexists(ht / "escape")
    status = ctl.json("workspace", "status", "w1")[0]
    att = status["attachments"][0]
    assert att["refused"] == ["escape"] and att["online"], status
    # sync now returns after a round; status then says in sync
    got = ctl.json("workspace", "sync", "w1")[0]
    assert got["attachments"][0]["rounds"] and digest(ht) == got["hub_tree_digest"]


@pytest.mark.timeout(180)
def test_offline_node_catches_up_and_a_both_sided_edit_is_a_kept_conflict(fleet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    hub = fleet.hub(shards=1)
    ctl = Ctl(hub)
    node = fleet.nodes(hub, 1)[0]
    src = tmp_path / "src-tree"
    make_source(src)
    ctl.ok("workspace", "create", "w2", "--from", str(src))
    ht, copy = hub_tree(hub, "w2"), tmp_path / "copy"
    ctl.ok("workspace", "attach", "w2", "--node", node.node_id, "--path", str(copy))
    wait_until(lambda: converged(ht, copy), 60, "first sync")
    assert node.stop() == 0  # offline during the edits
    (ht / "hub-only.txt").write_text("hub\n")
    (copy / "node-only.txt").write_text("node\n")
    (ht / "src" / "main.py").write_text("hub's version\n")
    (copy / "src" / "main.py").write_text("node's version\n")
    (copy / "empty" / "dir").rmdir()
    node.start()
    wait_until(lambda: (copy / "hub-only.txt").exists() and (ht / "node-only.txt").exists()
               and not (ht / "empty" / "dir").exists(), 60, "catch up")
    conflicts = ctl.json("workspace", "conflicts", "w2")
    wait_until(lambda: len(ctl.json("workspace", "conflicts", "w2")) == 1, 30, "conflict")
    conflicts = ctl.json("workspace", "conflicts", "w2")
    assert conflicts[0]["path"] == "src/main.py", conflicts
    # both versions kept, each where it was
    assert (ht / "src" / "main.py").read_text() == "hub's version\n"
    assert (copy / "src" / "main.py").read_text() == "node's version\n"
    ctl.ok("workspace", "resolve", "w2", "src/main.py", "--keep", "node")
    wait_until(lambda: (ht / "src" / "main.py").read_text() == "node's version\n", 30,
               "resolved")
    wait_until(lambda: converged(ht, copy), 30, "converged after resolve")
    assert ctl.json("workspace", "conflicts", "w2") == []
    done = ctl.json("workspace", "conflicts", "w2", "--all")
    assert done[0]["resolution"] == "node"
    # the hub's losing version is kept as a blob, by its digest
    lost = done[0]["hub"]["digest"]
    assert (hub.state_dir / "workspaces" / ".blobs" / lost[:2] / lost).exists()


@pytest.mark.timeout(240)
def test_hub_killed_mid_sync_loses_and_corrupts_nothing(fleet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    hub = fleet.hub(shards=1)
    ctl = Ctl(hub)
    node = fleet.nodes(hub, 1)[0]
    ctl.ok("workspace", "create", "w3")
    ht, copy = hub_tree(hub, "w3"), tmp_path / "copy"
    ctl.ok("workspace", "attach", "w3", "--node", node.node_id, "--path", str(copy))
    wait_until(lambda: copy.is_dir(), 30, "attached")
    for d in range(40):
        (copy / f"d{d}").mkdir(parents=True, exist_ok=True)
        for f in range(50):
            (copy / f"d{d}" / f"f{f}.txt").write_bytes(os.urandom(2048))
    want = digest(copy)
    # kill -9 the hub while the 2,000 files are moving
    wait_until(lambda: ht.exists() and any(ht.iterdir()), 60, "sync under way")
    hub.kill()
    hub.start()
    wait_until(lambda: converged(ht, copy), 120, "sync after the restart")
    assert digest(copy) == want == digest(ht)
    assert not list(ht.rglob(".cortex-tmp-*"))
    # a later edit still goes through (the synced state was not corrupted)
    (ht / "d0" / "f0.txt").write_text("after\n")
    wait_until(lambda: (copy / "d0" / "f0.txt").read_bytes() == b"after\n", 30, "after")
