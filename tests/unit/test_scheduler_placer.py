"""The scheduling pass's Placer makes exactly the choices of repeated ``pick`` calls."""

import random

from cortexd.scheduler import Candidate, Placer, pick


def _count(node: Candidate) -> int:
    return node.running


def _fleet(rng: random.Random, n: int) -> list[Candidate]:
    return [Candidate(f"n{i}", {"os": rng.choice(["linux", "mac"])}, rng.randint(1, 4),
                      rng.randint(0, 3), attached=rng.random() > 0.1,
                      draining=rng.random() < 0.1, last_picked=rng.randint(0, 5))
            for i in range(n)]


def test_placer_agrees_with_pick_over_a_pass() -> None:
    rng = random.Random(5)
    for _ in range(200):
        seed = rng.randint(0, 1 << 30)
        by_pick, by_placer = _fleet(random.Random(seed), 30), _fleet(random.Random(seed), 30)
        placer = Placer(by_placer, _count)
        picks = 100
        for _ in range(60):
            selector = rng.choice([{}, {}, {"os": "linux"}])
            pin = rng.choice(["", "", "", "n3"])
            a = pick(by_pick, selector, pin)
            b = placer.pick(selector, pin)
            assert (a and a.node_id) == (b and b.node_id)
            if a is None or b is None:
                continue
            picks += 1
            for node in (a, b):
                node.running += 1
                node.last_picked = picks
            placer.placed(b)


def test_placer_skips_full_detached_and_draining_nodes() -> None:
    nodes = [Candidate("a", {}, 1, 0), Candidate("b", {}, 1, 0, attached=False),
             Candidate("c", {}, 1, 0, draining=True), Candidate("d", {}, 2, 2)]
    placer = Placer(nodes, _count)
    first = placer.pick({})
    assert first is not None and first.node_id == "a"
    first.running, first.last_picked = 1, 1
    placer.placed(first)
    assert placer.pick({}) is None


def test_a_task_in_a_workspace_goes_only_to_a_node_it_is_attached_to() -> None:
    nodes = [Candidate("a", {}, 4, 0), Candidate("b", {"os": "linux"}, 4, 1),
             Candidate("c", {"os": "linux"}, 1, 1), Candidate("d", {}, 4, 0, draining=True)]
    placer = Placer(nodes, _count)
    assert placer.pick({}).node_id == "a"  # type: ignore[union-attr]
    got = placer.pick({}, among={"b", "c"})
    assert got is not None and got.node_id == "b"  # c is full
    assert placer.pick({}, among={"c", "d", "gone"}) is None  # full, draining, unknown
    assert placer.pick({}, among=()) is None  # attached to no node
    assert placer.pick({"os": "mac"}, among={"b"}) is None  # the selector still applies
    assert placer.pick({}, "a", among={"b"}) is None  # and the pin


def _key(node: Candidate) -> tuple[float, int]:
    return (node.running / node.capacity, node.last_picked)


def test_a_kept_placer_told_of_every_change_chooses_as_pick_does() -> None:
    """Kept for a long run of placements, ends, detaches, drains and new nodes (each
    told), the Placer's choice is always one ``pick`` would make (ties may differ), and
    its heap stays within twice the nodes: no rebuild is needed for it to be right."""
    rng = random.Random(9)
    nodes = _fleet(rng, 40)
    placer = Placer(nodes, _count)
    picks, made = 100, 0
    for _ in range(4000):
        roll = rng.random()
        if roll < 0.45:
            a, b = pick(nodes, {}), placer.pick({})
            assert (a is None) == (b is None)
            if a is None or b is None:
                continue
            assert _key(a) == _key(b) and b.attached and not b.draining
            picks += 1
            made += 1
            b.running += 1
            b.last_picked = picks
            placer.placed(b)
            continue
        node = rng.choice(nodes)
        if roll < 0.8:  # one of its tasks ended
            if node.running == 0:
                continue
            node.running -= 1
        elif roll < 0.88:
            node.attached = not node.attached
        elif roll < 0.96:
            node.draining = not node.draining
        else:  # the node attached again: a new session, a new object
            fresh = Candidate(node.node_id, node.labels, node.capacity, node.running,
                              last_picked=node.last_picked)
            nodes[nodes.index(node)] = node = fresh
        placer.changed(node)
        assert len(placer._heap) <= 2 * len(nodes) + 65  # outdated entries are dropped
    assert made > 500 and placer.heap_builds < 4000 // 40


def test_a_change_not_told_leaves_the_node_out_until_a_new_placer() -> None:
    a = Candidate("a", {}, 1, 0)
    placer = Placer([a], _count)
    assert placer.pick({}) is a
    a.running, a.last_picked = 1, 1
    placer.placed(a)
    assert placer.pick({}) is None
    a.running = 0  # not told
    assert placer.pick({}) is None
    assert Placer([a], _count).pick({}) is a
    placer.changed(a)  # told
    assert placer.pick({}) is a


def test_a_pinned_task_looks_at_its_node_only() -> None:
    looked: list[str] = []

    def counting(node: Candidate) -> int:
        looked.append(node.node_id)
        return node.running

    nodes = [Candidate(f"n{i}", {"os": "linux"}, 2, 0) for i in range(1000)]
    placer = Placer(nodes, counting)
    looked.clear()
    assert placer.pick({}, "n500") is nodes[500]
    assert placer.pick({"os": "mac"}, "n500") is None  # the selector still applies
    assert placer.pick({}, "gone") is None
    assert placer.pick({}, "n7", among={"n500"}) is None  # and the workspace's nodes
    assert looked == ["n500", "n500"]
