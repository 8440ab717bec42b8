"""ListTasks pages (cortexd/control/listing.py): tokens, the byte budget, cut commands."""

import pytest

from cortex.v1 import control_pb2 as pb
from cortexd.control import listing


def tasks(n: int, command_bytes: int = 10) -> list[pb.Task]:
    return [pb.Task(task_id=f"t-{i:020x}", created_ms=1000 - i, command="é" * command_bytes)
            for i in range(n)]


def test_a_listed_command_is_cut_on_a_character_and_marked():
    [task] = tasks(1, command_bytes=30_000)  # 60,000 bytes of UTF-8
    listing.truncate_command(task)
    assert task.command_truncated and task.command_bytes == 60_000
    assert len(task.command.encode()) <= listing.LIST_COMMAND_BYTES
    [short] = tasks(1)
    listing.truncate_command(short)
    assert not short.command_truncated and short.command_bytes == 20


def test_a_page_stops_at_the_limit_or_the_budget_and_says_where_to_go_on():
    response = listing.page(tasks(4), limit=3)  # the store's rows: limit + 1
    assert len(response.tasks) == 3
    assert listing.read_page_token(response.next_page_token) == (998, f"t-{2:020x}")
    assert listing.page(tasks(3), limit=3).next_page_token == ""
    many = listing.page(tasks(2000, command_bytes=600), limit=10_000)
    assert 0 < len(many.tasks) < 2000 and many.next_page_token
    assert many.ByteSize() <= listing.PAGE_BUDGET_BYTES + 1024


@pytest.mark.parametrize("token", ["x", "bm9wZQ==", listing.page_token(1, "t-1")[:-2] + "@@"])
def test_a_token_the_hub_did_not_give_is_refused(token):
    with pytest.raises(listing.BadPageToken):
        listing.read_page_token(token)


def test_ten_thousand_nodes_come_in_pages_under_the_message_limit():
    labels = {"os": "linux", "arch": "x86_64", "zone": "z1", "cortex.tool/shell": "0.1.0",
              "cortex.tool/browser": "0.1.0"}
    nodes = [pb.Node(node_id=f"node-{i:05d}", attached=True, labels=labels, capacity=8,
                     agent_version="0.1.0", hub_id="hub-a:7700") for i in range(10_000)]
    assert sum(n.ByteSize() for n in nodes) > 1 << 20  # one response would not fit
    seen: list[str] = []
    after = ""
    while True:
        page = listing.node_page(list(reversed(nodes)), after, 0)
        assert page.ByteSize() <= listing.PAGE_BUDGET_BYTES + 1024
        seen += [n.node_id for n in page.nodes]
        if not page.next_page_token:
            break
        after = listing.read_node_token(page.next_page_token)
    assert seen == [n.node_id for n in nodes]
    limited = listing.node_page(nodes, "", 3)
    assert [n.node_id for n in limited.nodes] == ["node-00000", "node-00001", "node-00002"]
    with pytest.raises(listing.BadPageToken):
        listing.read_node_token(listing.page_token(1, f"t-{0:020x}"))
