"""Choosing a node for a task, pure: labels must match, capacity must be free.

Among the nodes that fit, the least loaded (running / capacity) wins; ties go to
the node that was picked least recently, so that equal nodes share the work.
"""

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(slots=True)
class Candidate:
    node_id: str
    labels: dict[str, str]
    capacity: int
    running: int
    attached: bool = True
    draining: bool = False
    last_picked: int = 0


def fits(node: Candidate, selector: dict[str, str], pin: str) -> bool:
    if not node.attached or node.draining or node.running >= node.capacity:
        return False
    if pin and node.node_id != pin:
        return False
    return all(node.labels.get(k) == v for k, v in selector.items())


def pick(nodes: Iterable[Candidate], selector: dict[str, str], pin: str = "") -> Candidate | None:
    best: Candidate | None = None
    best_key: tuple[float, int] = (2.0, 0)
    for node in nodes:
        if not fits(node, selector, pin):
            continue
        key = (node.running / node.capacity, node.last_picked)
        if best is None or key < best_key:
            best, best_key = node, key
    return best
