"""Workspace sync, the pure core: a three-way merge of two trees against the last synced one.

Issue 12's workspaces ("ghost mirror") keep a hub-side tree and node-side copies in sync
both ways. This module decides, without I/O, what a sync does, given three snapshots of
one workspace: ``base`` (the state both sides had at the last sync), ``hub`` and
``node`` (what each side has now). Each snapshot maps a relative path to an
:class:`Entry` (a file with its sha256 and executable bit, a directory, or a symlink
with its target). The adapters that scan trees, move bytes (through the artifact path)
and apply actions are not built yet.

The rules (in the manner of Mutagen's two-way-safe mode):

- A path equal on both sides needs nothing (whatever the base says).
- Changed on one side only (creation, modification, deletion, type change): the change
  goes to the other side.
- **Deletion against modification**: the modification wins (it is propagated back to
  the side that deleted): a change is never lost to a deletion.
- **Changed on both sides, differently**: a conflict. Neither side is touched and the
  base stays as it was, so the conflict stays until it is resolved (``resolve``: the
  chosen side's entry goes to the other side, whose version the adapter keeps aside).
- A directory deletion that would remove a path still present on that side after the
  merge is dropped, and the directory goes back to the side that deleted it.
- Paths are validated (relative, normalised, no ``..``, no NUL); a symlink whose target
  is absolute or resolves outside the workspace root is refused (never followed).

``plan`` returns the actions in an order an adapter can apply one by one: creations and
modifications parents first, deletions children first.
"""

import hashlib
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cortex.errors import CortexError

FILE, DIR, LINK = "file", "dir", "link"
HUB, NODE = "hub", "node"
MAX_PATH_BYTES = 4096


class WorkspacePathError(CortexError):
    """A path or symlink that would escape the workspace root, or is not well formed."""


@dataclass(frozen=True, slots=True)
class Entry:
    kind: str                 # file | dir | link
    digest: str = ""          # file: sha256; link: its target; dir: ""
    executable: bool = False  # file: any x bit


Tree = Mapping[str, Entry]


@dataclass(frozen=True, slots=True)
class Action:
    to: str                   # the side that changes: hub | node
    path: str
    entry: Entry | None       # None: delete it there


@dataclass(frozen=True, slots=True)
class Conflict:
    path: str
    base: Entry | None
    hub: Entry | None
    node: Entry | None


@dataclass(slots=True)
class Plan:
    actions: list[Action] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    base: dict[str, Entry] = field(default_factory=dict)  # the base once applied


def check_path(path: str) -> str:
    """A workspace-relative path, normalised; WorkspacePathError if it could escape."""
    if not path or "\x00" in path or len(path.encode()) > MAX_PATH_BYTES:
        raise WorkspacePathError(f"path {path[:80]!r}: empty, too long or has NUL")
    if path.startswith("/"):
        raise WorkspacePathError(f"path {path!r} is absolute")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise WorkspacePathError(f"path {path!r} leaves the workspace")
    return "/".join(parts)


def check_link(path: str, target: str) -> None:
    """A symlink at ``path`` may point only inside the workspace, by a relative target."""
    if not target or target.startswith("/") or "\x00" in target:
        raise WorkspacePathError(f"symlink {path!r} -> {target!r}: absolute or empty target")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if joined == ".." or joined.startswith("../"):
        raise WorkspacePathError(f"symlink {path!r} -> {target!r} points outside the workspace")


def check_tree(tree: Tree) -> None:
    for path, entry in tree.items():
        if check_path(path) != path:
            raise WorkspacePathError(f"path {path!r} is not normalised")
        if entry.kind == LINK:
            check_link(path, entry.digest)
        elif entry.kind not in (FILE, DIR):
            raise WorkspacePathError(f"{path!r}: unknown kind {entry.kind!r}")


def _under(path: str, parent: str) -> bool:
    return path.startswith(parent + "/")


def _decide(b: Entry | None, h: Entry | None, n: Entry | None) -> str:
    """same | to_hub | to_node | conflict, for one path."""
    if h == n:
        return "same"
    if h == b:
        return "to_hub"
    if n == b:
        return "to_node"
    if h is None:  # the hub deleted, the node modified: the modification wins
        return "to_hub"
    if n is None:
        return "to_node"
    return "conflict"


def plan(base: Tree, hub: Tree, node: Tree) -> Plan:
    for tree in (base, hub, node):
        check_tree(tree)
    out = Plan()
    final = {HUB: dict(hub), NODE: dict(node)}
    for path in sorted(set(base) | set(hub) | set(node)):
        b, h, n = base.get(path), hub.get(path), node.get(path)
        verdict = _decide(b, h, n)
        if verdict == "same":
            if h is not None:
                out.base[path] = h
        elif verdict == "conflict":
            out.conflicts.append(Conflict(path, b, h, n))
            if b is not None:
                out.base[path] = b
        else:
            side, entry = (HUB, n) if verdict == "to_hub" else (NODE, h)
            out.actions.append(Action(side, path, entry))
            if entry is None:
                final[side].pop(path, None)
            else:
                final[side][path] = entry
                out.base[path] = entry
    _keep_needed_dirs(out, final, hub, node)
    out.actions.sort(key=_order)
    return out


def _keep_needed_dirs(out: Plan, final: dict[str, dict[str, Entry]], hub: Tree,
                      node: Tree) -> None:
    """Drop a directory deletion that would take a surviving path with it; the directory
    goes back to the side that had deleted it instead."""
    now = {HUB: hub, NODE: node}
    for act in list(out.actions):
        if act.entry is not None:
            continue
        gone = now[act.to].get(act.path)
        if gone is None or gone.kind != DIR:
            continue
        if any(_under(p, act.path) for p in final[act.to]):
            out.actions.remove(act)
            other = NODE if act.to == HUB else HUB
            out.actions.append(Action(other, act.path, gone))
            final[act.to][act.path] = gone
            out.base[act.path] = gone


def _order(a: Action) -> tuple[int, int, str]:
    # Creations parents first (path order), then deletions children first (deepest first).
    if a.entry is None:
        return (1, -a.path.count("/"), a.path)
    return (0, 0, a.path)


def resolve(conflict: Conflict, keep: str) -> Action:
    """The action that ends a conflict by keeping side ``keep``'s version everywhere."""
    if keep == HUB:
        return Action(NODE, conflict.path, conflict.hub)
    if keep == NODE:
        return Action(HUB, conflict.path, conflict.node)
    raise ValueError(f"keep must be {HUB!r} or {NODE!r}")


def tree_digest(tree: Tree) -> str:
    """One sha256 naming a whole tree (paths, kinds, digests, exec bits): equal trees
    have equal digests, so two sides can be compared in one value."""
    h = hashlib.sha256()
    for path in sorted(tree):
        e = tree[path]
        h.update(f"{path}\x00{e.kind}\x00{e.digest}\x00{int(e.executable)}\n".encode())
    return h.hexdigest()


def changed(old: Tree, new: Tree) -> Iterable[str]:
    """Paths whose entry differs (incremental: what to send, what to hash again)."""
    return sorted(p for p in set(old) | set(new) if old.get(p) != new.get(p))
