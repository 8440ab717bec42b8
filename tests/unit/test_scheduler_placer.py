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
