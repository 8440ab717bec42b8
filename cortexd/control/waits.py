"""Why a task waits in QUEUED, as a pure rule over what the hub knows of its nodes.

A task no node could take used to wait silently, and ``--follow`` hung with no word
(issue 13). :func:`why_queued` names the first reason that holds, in this order:

- pinned to a node (``--node``): the node is ``node_unknown`` (it never attached here),
  ``node_detached``, ``node_draining``, ``no_match`` (its labels or tools do not fit the
  selector/tool), or ``busy`` (at capacity);
- otherwise: ``no_node`` (nothing attached), ``no_match`` (no attached node has the
  selector's labels and the tool), ``draining`` (every matching node drains), ``busy``
  (every matching node is at capacity).

A task in a workspace is decided over the nodes the workspace is attached to only
(``among``): ``no_node`` when none of them is attached to the hub.

No reason (``Wait()``) means a node could take it now: it is about to be placed. In a
cluster the nodes are this hub's and those the directory last said other hubs hold.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cortex.tools import requires

if TYPE_CHECKING:
    from cortexd.store import TaskRow


@dataclass(frozen=True, slots=True)
class NodeLoad:
    node_id: str
    labels: Mapping[str, str]
    capacity: int
    running: int
    attached: bool
    draining: bool


@dataclass(frozen=True, slots=True)
class Wait:
    code: str = ""  # "" = nothing in the way
    text: str = ""


def _fits(node: NodeLoad, selector: Mapping[str, str], needs: str | None) -> bool:
    if needs is not None and needs not in node.labels:
        return False
    return all(node.labels.get(k) == v for k, v in selector.items())


def _wanted(selector: Mapping[str, str], tool: str) -> str:
    parts = [f"selector {','.join(f'{k}={v}' for k, v in sorted(selector.items()))}"
             ] if selector else []
    if requires(tool) is not None:
        parts.append(f"tool {tool}")
    return " and ".join(parts) or "it"


def why_queued(selector: Mapping[str, str], pin: str, tool: str, nodes: Iterable[NodeLoad],
               clustered: bool = False, among: Collection[str] | None = None,
               workspace: str = "") -> Wait:
    needs = requires(tool)
    here = " attached to any hub of the cluster" if clustered else " attached"
    if among is not None:  # a task in a workspace: only the nodes it is attached to
        nodes = [n for n in nodes if n.node_id in among]
        if not pin and not any(n.attached for n in nodes):
            on = ", ".join(sorted(among)) or "no node"
            return Wait("no_node", f"workspace {workspace} is attached to {on}: none of "
                        "them is attached to the hub")
    if pin:
        node = next((n for n in nodes if n.node_id == pin), None)
        if node is None:
            return Wait("node_unknown", f"node {pin} is unknown: it never attached"
                        + (" to a hub of the cluster" if clustered else ""))
        if not node.attached:
            return Wait("node_detached", f"node {pin} is detached (cortexctl nodes)")
        if node.draining:
            return Wait("node_draining", f"node {pin} is draining")
        if not _fits(node, selector, needs):
            return Wait("no_match", f"node {pin} does not have {_wanted(selector, tool)}")
        if node.running >= node.capacity:
            return Wait("busy", f"node {pin} is busy ({node.running}/{node.capacity} running)")
        return Wait()
    attached = [n for n in nodes if n.attached]
    if not attached:
        return Wait("no_node", f"no node is{here}")
    matching = [n for n in attached if _fits(n, selector, needs)]
    if not matching:
        return Wait("no_match", f"no node{here} matches {_wanted(selector, tool)} "
                    "(cortexctl nodes shows their labels)")
    ready = [n for n in matching if not n.draining]
    if not ready:
        return Wait("draining", f"every matching node ({len(matching)}) is draining")
    if all(n.running >= n.capacity for n in ready):
        running, capacity = sum(n.running for n in ready), sum(n.capacity for n in ready)
        return Wait("busy", f"all {len(ready)} matching nodes are busy "
                    f"({running}/{capacity} running)")
    return Wait()


def queue_timed_out(updated_ms: int, queue_timeout_s: int, now_ms: int) -> bool:
    """Whether a task QUEUED since ``updated_ms`` has outwaited its queue timeout."""
    return queue_timeout_s > 0 and now_ms - updated_ms >= queue_timeout_s * 1000


class WaitExplainer:
    """:func:`why_queued` for many tasks at once (a listing): the nodes' loads are read
    at most every ``max_age_s`` and each (selector, pin, tool) is decided once per read,
    so a page of a hundred queued tasks costs one pass over the nodes, not a hundred."""

    def __init__(self, loads: Callable[[], list[NodeLoad]], clustered: Callable[[], bool],
                 max_age_s: float = 0.5) -> None:
        self._loads, self._clustered, self._max_age_s = loads, clustered, max_age_s
        self._at = float("-inf")
        self._nodes: list[NodeLoad] = []
        self._memo: dict[tuple[tuple[tuple[str, str], ...], str, str, str, str], Wait] = {}
        # The nodes a workspace (owner, name) is attached to (HubState.workspace_nodes).
        self.workspace_nodes: Callable[[str, str], Collection[str] | None] = \
            lambda owner, name: ()

    def explain(self, selector: Mapping[str, str], pin: str, tool: str,
                owner: str = "", workspace: str = "") -> Wait:
        now = time.monotonic()
        if now - self._at >= self._max_age_s:
            self._at, self._nodes, self._memo = now, self._loads(), {}
        key = (tuple(sorted(selector.items())), pin, tool, owner, workspace)
        if (found := self._memo.get(key)) is None:
            among = (self.workspace_nodes(owner, workspace) or ()) if workspace else None
            found = self._memo[key] = why_queued(selector, pin, tool, self._nodes,
                                                 self._clustered(), among, workspace)
        return found

    def explain_task(self, task: TaskRow) -> Wait:
        return self.explain(task.selector, task.node_pin, task.tool, task.tenant,
                            task.workspace)
