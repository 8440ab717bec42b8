"""Choosing a node for a task, pure: labels must match, capacity must be free.

Among the nodes that fit, the least loaded (running / capacity) wins; ties go to
the node that was picked least recently, so that equal nodes share the work. A task
whose tool is not the shell needs a node with that tool's label (``cortex/tools.py``);
a task that runs in a workspace, a node the workspace is attached to (``among``).
"""

import heapq
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from cortex.tools import requires


@dataclass(slots=True)
class Candidate:
    node_id: str
    labels: dict[str, str]
    capacity: int
    running: int
    attached: bool = True
    draining: bool = False
    last_picked: int = 0


def fits(node: Candidate, selector: dict[str, str], pin: str, tool: str = "") -> bool:
    if not node.attached or node.draining or node.running >= node.capacity:
        return False
    if pin and node.node_id != pin:
        return False
    return _matches(node.labels, selector, requires(tool))


def _matches(labels: dict[str, str], selector: dict[str, str], needs: str | None) -> bool:
    if needs is not None and needs not in labels:
        return False
    return all(labels.get(k) == v for k, v in selector.items())


def pick(nodes: Iterable[Candidate], selector: dict[str, str], pin: str = "",
         tool: str = "") -> Candidate | None:
    best: Candidate | None = None
    best_key: tuple[float, int] = (2.0, 0)
    for node in nodes:
        if not fits(node, selector, pin, tool):
            continue
        key = (node.running / node.capacity, node.last_picked)
        if best is None or key < best_key:
            best, best_key = node, key
    return best


class Placeable(Protocol):
    """What a :class:`Placer` needs of a node (a Candidate, or the hub's own node state)."""

    node_id: str
    labels: dict[str, str]
    capacity: int
    attached: bool
    draining: bool
    last_picked: int


N = TypeVar("N", bound=Placeable)


class Placer(Generic[N]):
    """One scheduling pass's choices, the same as :func:`pick` but O(log n) per task.

    Tasks without a selector, pin or tool other than the shell (the common case) take
    the top of a heap keyed like ``pick`` — (load, last picked, position) — instead of
    a scan of every node, so a pass over k tasks and n nodes costs O(n + k log n), not
    O(n k). The others scan as ``pick`` does; those limited to ``among`` (the nodes a
    workspace is attached to) look only at those. ``running(node)`` counts a node's tasks,
    so the nodes need not be copied into Candidates for each pass. The caller records
    a placement on the node (one more running, ``last_picked``) and then calls
    :meth:`placed`, which pushes the node's new key; keys only grow within a pass, so
    an entry whose key is no longer its node's is outdated and skipped. A full node
    leaves the heap.
    """

    def __init__(self, nodes: Iterable[N], running: Callable[[N], int]) -> None:
        self._running = running
        self.nodes = [n for n in nodes
                      if n.attached and not n.draining and running(n) < n.capacity]
        self._heap = [(running(n) / n.capacity, n.last_picked, i, n)
                      for i, n in enumerate(self.nodes)]
        heapq.heapify(self._heap)
        self._next = len(self.nodes)
        self._by_id: dict[str, N] | None = None  # built on the first pick limited to ``among``

    def pick(self, selector: dict[str, str], pin: str = "", tool: str = "",
             among: Collection[str] | None = None) -> N | None:
        needs = requires(tool)
        if among is not None:
            if self._by_id is None:
                self._by_id = {n.node_id: n for n in self.nodes}
            by_id = self._by_id
            return self._scan(selector, pin, needs, [by_id[i] for i in among if i in by_id])
        if selector or pin or needs is not None:
            return self._scan(selector, pin, needs, self.nodes)
        heap = self._heap
        while heap:
            load, last, _, node = heap[0]
            running = self._running(node)
            if (running < node.capacity and last == node.last_picked
                    and load == running / node.capacity):
                return node
            heapq.heappop(heap)
        return None

    def _scan(self, selector: dict[str, str], pin: str, needs: str | None,
              nodes: Iterable[N]) -> N | None:
        best: N | None = None
        best_key: tuple[float, int] = (2.0, 0)
        for node in nodes:
            running = self._running(node)
            if running >= node.capacity or (pin and node.node_id != pin):
                continue
            if not _matches(node.labels, selector, needs):
                continue
            key = (running / node.capacity, node.last_picked)
            if best is None or key < best_key:
                best, best_key = node, key
        return best

    def placed(self, node: N) -> None:
        """``node`` took a task (its running count and last_picked are updated)."""
        running = self._running(node)
        if running < node.capacity:
            self._next += 1  # ties on (load, last picked) never compare the nodes
            heapq.heappush(self._heap, (running / node.capacity, node.last_picked, self._next,
                                        node))
