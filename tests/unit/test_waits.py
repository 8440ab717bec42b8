"""Why a task waits in QUEUED (cortexd/control/waits.py), without a hub."""

from cortexd.control.waits import NodeLoad, WaitExplainer, queue_timed_out, why_queued


def node(node_id="n1", labels=None, capacity=2, running=0, attached=True, draining=False):
    return NodeLoad(node_id, labels or {"os": "linux"}, capacity, running, attached, draining)


def code(selector=None, pin="", tool="", nodes=(), clustered=False):
    return why_queued(selector or {}, pin, tool, list(nodes), clustered).code


def test_a_pinned_task_names_what_is_wrong_with_its_node():
    assert code(pin="ghost", nodes=[node()]) == "node_unknown"
    assert code(pin="n1", nodes=[node(attached=False)]) == "node_detached"
    assert code(pin="n1", nodes=[node(draining=True)]) == "node_draining"
    assert code(pin="n1", selector={"gpu": "a100"}, nodes=[node()]) == "no_match"
    assert code(pin="n1", tool="browser", nodes=[node()]) == "no_match"
    assert code(pin="n1", nodes=[node(running=2)]) == "busy"
    assert code(pin="n1", nodes=[node()]) == ""


def test_an_unpinned_task_names_the_first_reason_that_holds():
    assert code() == "no_node"
    assert code(nodes=[node(attached=False)]) == "no_node"
    wait = why_queued({"gpu": "a100"}, "", "", [node()])
    assert wait.code == "no_match" and "selector gpu=a100" in wait.text
    assert code(tool="browser", nodes=[node()]) == "no_match"
    assert code(tool="browser", nodes=[node(labels={"cortex.tool/browser": "1"})]) == ""
    assert code(nodes=[node(draining=True)]) == "draining"
    busy = why_queued({}, "", "", [node(running=2), node("n2", capacity=1, running=1)])
    assert busy.code == "busy" and "all 2 matching nodes are busy (3/3 running)" in busy.text
    assert code(nodes=[node(running=2), node("n2")]) == ""
    assert "of the cluster" in why_queued({}, "ghost", "", [], clustered=True).text


def test_the_queue_timeout_counts_from_entering_the_queue():
    assert not queue_timed_out(updated_ms=1000, queue_timeout_s=0, now_ms=10**9)
    assert not queue_timed_out(updated_ms=1000, queue_timeout_s=5, now_ms=5999)
    assert queue_timed_out(updated_ms=1000, queue_timeout_s=5, now_ms=6000)


def test_the_explainer_reads_the_nodes_once_per_listing():
    reads = []

    def loads():
        reads.append(1)
        return [node()]

    waits = WaitExplainer(loads, lambda: False, max_age_s=60)
    for _ in range(100):
        assert waits.explain({"gpu": "a100"}, "", "").code == "no_match"
        assert waits.explain({}, "", "").code == ""
    assert len(reads) == 1


def test_in_a_cluster_the_directory_s_nodes_on_other_hubs_count():
    from types import SimpleNamespace

    from cortexd.control.queuewaits import node_waits
    from cortexd.coord import DirEntry

    local = SimpleNamespace(node_id="n1", labels={"zone": "a"}, capacity=1, running=set(),
                            attached=False, draining=False)
    directory = {"n1": DirEntry("hub-b", 0, 3, {"zone": "a"}, 2, 2),  # moved to hub-b, full
                 "n2": DirEntry("hub-b", 1, 4, {"gpu": "a100"}, 4, 0),
                 "n3": DirEntry("hub-a", 0, 5, {"gpu": "h100"}, 4, 0)}  # ours: st.nodes says
    coord = SimpleNamespace(host_id="hub-a", clustered=True,
                            known_directory=lambda: directory)
    waits = node_waits(SimpleNamespace(nodes={"n1": local}, coord=coord))
    assert waits.explain({"gpu": "a100"}, "", "").code == ""  # n2 on hub-b can take it
    assert waits.explain({"gpu": "h100"}, "", "").code == "no_match"
    assert waits.explain({}, "n1", "").code == "busy"  # attached at hub-b, at capacity
    assert "any hub of the cluster" in waits.explain({"gpu": "x"}, "", "").text


def test_a_task_in_a_workspace_waits_for_the_nodes_it_is_attached_to():
    nodes = [node("n1"), node("n2", attached=False), node("n3", running=2)]
    wait = why_queued({}, "", "", nodes, among={"n2"}, workspace="w1")
    assert wait.code == "no_node" and "workspace w1 is attached to n2" in wait.text
    assert why_queued({}, "", "", nodes, among=(), workspace="w1").code == "no_node"
    assert why_queued({}, "", "", nodes, among={"n3"}, workspace="w1").code == "busy"
    assert why_queued({}, "", "", nodes, among={"n1", "n2"}, workspace="w1").code == ""
    explainer = WaitExplainer(lambda: nodes, lambda: False)
    explainer.workspace_nodes = lambda owner, name: {"n3"} if name == "w1" else None
    assert explainer.explain({}, "", "", "default", "w1").code == "busy"
    assert explainer.explain({}, "", "", "default", "").code == ""
    assert explainer.explain({}, "", "", "default", "gone").code == "no_node"
