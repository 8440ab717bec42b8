"""The workspace three-way merge, pure (cortex/wsmerge.py): every rule, both directions."""

import pytest

from cortex.wsmerge import (
    DIR,
    FILE,
    HUB,
    LINK,
    NODE,
    Action,
    Entry,
    WorkspacePathError,
    changed,
    check_link,
    check_path,
    plan,
    resolve,
    tree_digest,
)

A, B, C = Entry(FILE, "a" * 64), Entry(FILE, "b" * 64), Entry(FILE, "c" * 64)
D = Entry(DIR)


def test_nothing_changed_needs_nothing() -> None:
    base = {"x": A, "d": D, "d/y": B}
    p = plan(base, dict(base), dict(base))
    assert p.actions == [] and p.conflicts == [] and p.base == base


@pytest.mark.parametrize(("side", "other"), [(HUB, NODE), (NODE, HUB)])
def test_a_change_on_one_side_goes_to_the_other(side: str, other: str) -> None:
    base = {"x": A, "gone": B}
    changed_side = {"x": C, "new": A, "d": D, "d/f": B}  # modified, created, deleted
    trees = {side: changed_side, other: dict(base)}
    p = plan(base, trees[HUB], trees[NODE])
    assert p.conflicts == []
    assert p.actions == [Action(other, "d", D), Action(other, "d/f", B),
                         Action(other, "new", A), Action(other, "x", C),
                         Action(other, "gone", None)]
    assert p.base == changed_side


def test_same_change_on_both_sides_is_no_conflict() -> None:
    p = plan({"x": A}, {"x": B, "y": C}, {"x": B, "y": C})
    assert p.actions == [] and p.conflicts == [] and p.base == {"x": B, "y": C}


def test_changed_on_both_sides_is_a_conflict_and_touches_neither() -> None:
    p = plan({"x": A}, {"x": B}, {"x": C})
    assert p.actions == []
    assert [(c.path, c.base, c.hub, c.node) for c in p.conflicts] == [("x", A, B, C)]
    assert p.base == {"x": A}  # unresolved: the next sync sees the conflict again


def test_created_on_both_sides_differently_is_a_conflict() -> None:
    p = plan({}, {"x": B}, {"x": C})
    assert len(p.conflicts) == 1 and p.base == {}


def test_exec_bit_and_type_changes_are_changes() -> None:
    ax = Entry(FILE, A.digest, executable=True)
    p = plan({"x": A, "l": A}, {"x": ax, "l": Entry(LINK, "x")}, {"x": A, "l": A})
    assert p.actions == [Action(NODE, "l", Entry(LINK, "x")), Action(NODE, "x", ax)]
    assert plan({"x": A}, {"x": ax}, {"x": Entry(FILE, A.digest)}).conflicts == []


@pytest.mark.parametrize(("hub", "node", "action"), [
    ({}, {"x": B}, Action(HUB, "x", B)),     # hub deleted, node modified: modification wins
    ({"x": B}, {}, Action(NODE, "x", B)),
])
def test_deletion_never_beats_a_modification(hub, node, action) -> None:  # type: ignore[no-untyped-def]
    p = plan({"x": A}, hub, node)
    assert p.conflicts == [] and p.actions == [action] and p.base == {"x": B}


def test_deleted_on_both_sides() -> None:
    p = plan({"x": A}, {}, {})
    assert p.actions == [] and p.base == {}


def test_rename_is_a_deletion_and_a_creation() -> None:
    p = plan({"old": A}, {"old": A}, {"new": A})
    assert p.actions == [Action(HUB, "new", A), Action(HUB, "old", None)]
    assert p.base == {"new": A}


def test_a_directory_deletion_keeps_what_the_other_side_added_inside() -> None:
    base = {"d": D, "d/a": A}
    hub = {"d": D, "d/a": A, "d/new": B}  # the hub adds a file
    node: dict[str, Entry] = {}            # the node deletes the directory
    p = plan(base, hub, node)
    # d/a goes from the hub (unmodified there); d/new reaches the node, so d stays.
    assert Action(HUB, "d/a", None) in p.actions
    assert Action(NODE, "d", D) in p.actions and Action(NODE, "d/new", B) in p.actions
    assert Action(HUB, "d", None) not in p.actions
    assert p.base == {"d": D, "d/new": B}
    order = [a.path for a in p.actions if a.to == NODE]
    assert order.index("d") < order.index("d/new")  # parents first


def test_deletions_go_children_first() -> None:
    base = {"d": D, "d/e": D, "d/e/f": A, "z": B}
    p = plan(base, dict(base), {})
    assert [a.path for a in p.actions] == ["d/e/f", "d/e", "d", "z"]
    assert all(a.to == HUB and a.entry is None for a in p.actions)


def test_empty_directories_are_kept_and_synced() -> None:
    p = plan({}, {"empty": D}, {})
    assert p.actions == [Action(NODE, "empty", D)]


def test_resolve_keeps_the_chosen_side() -> None:
    conflict = plan({"x": A}, {"x": B}, {"x": C}).conflicts[0]
    assert resolve(conflict, HUB) == Action(NODE, "x", B)
    assert resolve(conflict, NODE) == Action(HUB, "x", C)
    with pytest.raises(ValueError):
        resolve(conflict, "both")


@pytest.mark.parametrize("path", ["", "/etc", "../x", "a/../../x", "a\x00", "x" * 5000])
def test_bad_paths_are_refused(path: str) -> None:
    with pytest.raises(WorkspacePathError):
        check_path(path)
    if path:
        with pytest.raises(WorkspacePathError):
            plan({}, {path: A}, {})


def test_paths_are_normalised() -> None:
    assert check_path("./a//b/") == "a/b"
    with pytest.raises(WorkspacePathError):
        plan({}, {"a//b": A}, {})  # trees carry normalised paths only


@pytest.mark.parametrize(("path", "target", "ok"), [
    ("l", "x", True), ("d/l", "../x", True), ("d/e/l", "../../x", True),
    ("l", "../x", False), ("d/l", "../../x", False), ("l", "/etc/passwd", False),
    ("l", "", False), ("d/l", "a/../../../x", False),
])
def test_symlinks_must_stay_inside(path: str, target: str, ok: bool) -> None:
    if ok:
        check_link(path, target)
    else:
        with pytest.raises(WorkspacePathError):
            check_link(path, target)
        with pytest.raises(WorkspacePathError):
            plan({}, {}, {path: Entry(LINK, target)})


def test_tree_digest_and_changed_paths() -> None:
    t1 = {"a": A, "d": D}
    assert tree_digest(t1) == tree_digest(dict(reversed(list(t1.items()))))
    assert tree_digest(t1) != tree_digest({"a": B, "d": D})
    assert tree_digest({"a": A}) != tree_digest({"a": Entry(FILE, A.digest, True)})
    assert list(changed(t1, {"a": B, "e": D})) == ["a", "d", "e"]
