"""cortex/wstree.py on real directories: incremental hashing, ignores, links, safe writes."""

import os
from pathlib import Path

import pytest

from cortex.wsmerge import DIR, FILE, LINK, Entry, WorkspacePathError
from cortex.wstree import StaleSource, TreeScanner, apply_entry, remove_entry, safe_path


def test_only_changed_files_are_hashed_again(tmp_path: Path) -> None:
    for i in range(20):
        (tmp_path / f"f{i}").write_text(str(i))
    s = TreeScanner(tmp_path)
    first = s.scan()
    assert s.hashed == 20 and len(first) == 20
    assert s.scan() == first and s.hashed == 0
    (tmp_path / "f3").write_text("changed")
    again = s.scan()
    assert s.hashed == 1 and again["f3"] != first["f3"]


def test_ignores_exec_bits_empty_dirs_and_links(tmp_path: Path) -> None:
    (tmp_path / ".cortexignore").write_text("*.log\nbuild/\n")
    (tmp_path / "a.log").write_text("x")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "out").write_text("x")
    (tmp_path / "empty").mkdir()
    run = tmp_path / "run.sh"
    run.write_text("#!/bin/sh\n")
    run.chmod(0o755)
    (tmp_path / "in").symlink_to("run.sh")
    (tmp_path / "out").symlink_to("/etc/passwd")
    (tmp_path / "up").symlink_to("../x")
    s = TreeScanner(tmp_path)
    tree = s.scan()
    assert "a.log" not in tree and "build" not in tree and "build/out" not in tree
    assert tree["empty"] == Entry(DIR) and tree["run.sh"].executable
    assert tree["in"] == Entry(LINK, "run.sh")
    assert sorted(s.refused) == ["out", "up"] and "out" not in tree


def test_writes_never_go_through_a_symlinked_parent(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "d").symlink_to(outside)
    with pytest.raises(WorkspacePathError):
        safe_path(root, "d/evil")
    with pytest.raises(WorkspacePathError):
        safe_path(root, "../evil")
    src = tmp_path / "src"
    src.write_text("data")
    import hashlib
    sha = hashlib.sha256(b"data").hexdigest()
    with pytest.raises(WorkspacePathError):
        apply_entry(root, "d/evil", Entry(FILE, sha), src)
    assert not list(outside.iterdir())
    apply_entry(root, "x/y", Entry(FILE, sha, True), src)
    assert (root / "x" / "y").read_text() == "data" and os.access(root / "x" / "y", os.X_OK)
    with pytest.raises(StaleSource):  # bytes that are not the digest: nothing written
        apply_entry(root, "x/z", Entry(FILE, "0" * 64), src)
    assert not (root / "x" / "z").exists() and sorted(os.listdir(root / "x")) == ["y"]
    assert remove_entry(root, "x/y") and remove_entry(root, "d")  # the link, not its target
    assert outside.is_dir() and not os.path.lexists(root / "d")
