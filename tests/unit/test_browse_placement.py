"""Browse placement (cortexd/control/browse.py choose_node): only nodes with the browser tool."""

from cortexd.control.browse import BROWSER_LABEL, choose_node
from cortexd.control.state import NodeState


def node(nid: str, browser: bool = True, **kw: object) -> NodeState:
    labels = {BROWSER_LABEL: "0.1.0"} if browser else {}
    n = NodeState(nid, 1, 0, {**labels, "zone": "a" if nid != "n3" else "b"}, 4,
                  attached=True)
    for k, v in kw.items():
        setattr(n, k, v)
    return n


def test_a_node_without_browserd_never_gets_a_session() -> None:
    plain = node("n0", browser=False)
    assert choose_node([plain], "", {}, {}) is None
    assert choose_node([plain], "n0", {}, {}) is None  # not even pinned
    assert choose_node([plain, node("n1")], "", {}, {"n1": 9}).node_id == "n1"  # type: ignore[union-attr]


def test_attached_not_draining_pin_selector_then_fewest_sessions() -> None:
    nodes = [node("n1"), node("n2"), node("n3"), node("n4", attached=False),
             node("n5", draining=True)]
    assert choose_node(nodes, "", {}, {"n1": 2, "n2": 1, "n3": 1}).node_id == "n2"  # type: ignore[union-attr]
    assert choose_node(nodes, "", {"zone": "b"}, {"n3": 5}).node_id == "n3"  # type: ignore[union-attr]
    assert choose_node(nodes, "n4", {}, {}) is None and choose_node(nodes, "n5", {}, {}) is None
