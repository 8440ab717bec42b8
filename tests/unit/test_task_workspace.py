"""A task in a workspace (issue 12): what a submission may say, where the hub may place
it (``check_workspace`` against the workspaces' attachments), and where on the node it
runs (``in_copy``: inside the copy, never outside, symlinks included)."""

from pathlib import Path

import pytest

from cortex.v1 import control_pb2
from cortexd.control.submitcheck import check_submit, check_workspace
from nodeagent.taskfiles import in_copy

ATTACHED = {("default", "w1"): {"n1", "n2"}, ("default", "bare"): set()}


def nodes_of(owner: str, name: str) -> set[str] | None:
    return ATTACHED.get((owner, name))


def req(**kw: object) -> control_pb2.SubmitRequest:
    return control_pb2.SubmitRequest(command="true", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("fields", "says"), [
    ({"workspace": "W1"}, "not a workspace name"),
    ({"workspace": "w1", "cwd": "/abs"}, "relative to the copy's root"),
    ({"workspace": "w1", "cwd": "../up"}, "leaves the workspace"),
    ({"workspace": "w1", "cwd": "a/../../b"}, "leaves the workspace"),
    ({"cwd": "rel"}, "cwd must be an absolute path"),
])
def test_a_submission_in_a_workspace_is_checked(fields: dict[str, str], says: str) -> None:
    err = check_submit(req(**fields))
    assert err is not None and says in err, err


def test_relative_cwd_and_the_root_are_fine_in_a_workspace() -> None:
    for cwd in ("", ".", "src/app", "./src"):
        assert check_submit(req(workspace="w1", cwd=cwd)) is None


def test_the_workspace_must_exist_and_be_attached_where_the_task_may_go() -> None:
    assert check_workspace(nodes_of, "default", req()) is None
    assert check_workspace(nodes_of, "default", req(workspace="w1")) is None
    assert check_workspace(nodes_of, "default", req(workspace="w1", node_id="n2")) is None
    code, text = check_workspace(nodes_of, "default", req(workspace="nope")) or ("", "")
    assert code == "NOT_FOUND" and "no workspace 'nope'" in text
    code, text = check_workspace(nodes_of, "other", req(workspace="w1")) or ("", "")
    assert code == "NOT_FOUND"  # another tenant's workspace is not there for this one
    code, text = check_workspace(nodes_of, "default", req(workspace="bare")) or ("", "")
    assert code == "FAILED_PRECONDITION" and "attached to no node" in text
    code, text = check_workspace(nodes_of, "default", req(workspace="w1", node_id="n3")) \
        or ("", "")
    assert code == "FAILED_PRECONDITION" and "not attached on node 'n3'" in text
    assert "n1, n2" in text


def test_the_cwd_of_a_task_in_a_workspace_stays_inside_the_copy(tmp_path: Path) -> None:
    root = tmp_path / "copy"
    (root / "src").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "out").symlink_to(tmp_path / "outside")
    (root / "in").symlink_to("src")
    real = root.resolve()
    assert in_copy(root, "") == real
    assert in_copy(root, "src") == real / "src"
    assert in_copy(root, "in") == real / "src"
    assert in_copy(root, "new/dir") == real / "new" / "dir"  # the node says it is missing
    for bad in ("out", "out/x", "..", "src/../..", "/etc"):
        with pytest.raises(ValueError):
            in_copy(root, bad)
