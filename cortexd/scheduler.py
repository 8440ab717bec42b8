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
    """The scheduler's choices, the same as :func:`pick` but O(log n) per task, kept
    across passes and told what changes instead of rebuilt (issue 9: a rebuild is
    O(nodes), and one every 100 ms was the part of a task's cost that grew with the
    fleet).

    Tasks without a selector, pin or tool other than the shell (the common case) take
    the top of a heap keyed like ``pick`` — (load, last picked, position) — instead of
    a scan of every node. A pinned task looks at its node only; those limited to
    ``among`` (the nodes a workspace is attached to) at those; the others (a selector, a
    tool) scan as ``pick`` does, O(n) per task. ``running(node)`` counts
    a node's tasks, so the nodes need not be copied into Candidates.

    What the caller tells it, each O(log n): :meth:`placed` after it recorded a
    placement on the node (one more running, ``last_picked``); :meth:`changed` when a
    node's key moved otherwise (a task of it ended) or it became placeable (attached,
    undrained: a node id it does not hold, or a newer object for one, is taken in).
    Each pushes the node's current key. An entry whose key is no longer its node's, or
    whose node is no longer placeable (detached, draining, superseded), is outdated and
    skipped when it reaches the top; a full node leaves the heap until a change brings
    it back. Outdated entries are dropped in one O(n) pass when they outnumber the nodes
    (so O(1) per change, amortized). A change not told (a node's load fell, say) leaves
    the node out of the heap until the caller builds a new Placer.
    """

    def __init__(self, nodes: Iterable[N], running: Callable[[N], int]) -> None:
        self._running = running
        self._nodes: dict[str, N] = {n.node_id: n for n in nodes
                                     if n.attached and not n.draining}
        self._heap: list[tuple[float, int, int, N]] = []
        self._next = 0
        self.heap_builds = 0  # builds of the heap (this one, then compactions)
        self._build_heap()

    def __len__(self) -> int:
        """The nodes it holds (placeable when taken in; full or not)."""
        return len(self._nodes)

    def _build_heap(self) -> None:
        self._nodes = {i: n for i, n in self._nodes.items() if n.attached and not n.draining}
        running = self._running
        heap = []
        for n in self._nodes.values():
            count = running(n)
            if count < n.capacity:
                self._next += 1
                heap.append((count / n.capacity, n.last_picked, self._next, n))
        heapq.heapify(heap)
        self._heap = heap
        self.heap_builds += 1

    def pick(self, selector: dict[str, str], pin: str = "", tool: str = "",
             among: Collection[str] | None = None) -> N | None:
        needs = requires(tool)
        by_id = self._nodes
        if pin:  # one node at most: looked up, not scanned for
            return self._scan(selector, pin, needs, [by_id[pin]] if pin in by_id
                              and (among is None or pin in among) else [])
        if among is not None:
            return self._scan(selector, pin, needs, [by_id[i] for i in among if i in by_id])
        if selector or needs is not None:
            return self._scan(selector, pin, needs, by_id.values())
        heap, nodes = self._heap, self._nodes
        while heap:
            load, last, _, node = heap[0]
            running = self._running(node)
            if (running < node.capacity and last == node.last_picked
                    and load == running / node.capacity and node.attached
                    and not node.draining and nodes.get(node.node_id) is node):
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
            if not node.attached or node.draining:
                continue
            if not _matches(node.labels, selector, needs):
                continue
            key = (running / node.capacity, node.last_picked)
            if best is None or key < best_key:
                best, best_key = node, key
        return best

    def placed(self, node: N) -> None:
        """``node`` took a task (its running count and last_picked are updated)."""
        self._push(node)

    def changed(self, node: N) -> None:
        """``node``'s key moved (one of its tasks ended), or it became placeable, or it
        is a newer object (a new session) for a node id: it is held and its current key
        pushed. A node not placeable (detached, draining) is let go."""
        if not node.attached or node.draining:
            self.discard(node)
            return
        self._nodes[node.node_id] = node
        self._push(node)

    def discard(self, node: N) -> None:
        """Let ``node`` go (its entries are skipped)."""
        if self._nodes.get(node.node_id) is node:
            del self._nodes[node.node_id]

    def _push(self, node: N) -> None:
        running = self._running(node)
        if running < node.capacity:
            self._next += 1  # ties on (load, last picked) never compare the nodes
            heapq.heappush(self._heap, (running / node.capacity, node.last_picked, self._next,
                                        node))
            if len(self._heap) > 2 * len(self._nodes) + 64:
                self._build_heap()
