"""Shard operations' pure parts: which nodes a rebalance moves; the CLI's shape."""

import pytest

from cortexctl.cli import build_parser
from cortexd.control.operate import surplus_nodes
from cortexd.control.state import NodeState


def nodes(shard: int, count: int, busy: int = 0) -> list[NodeState]:
    out = [NodeState(f"n{shard}-{i}", 1, shard, {}, 4, attached=True) for i in range(count)]
    for node in out[:busy]:
        node.running = {"t-1"}
    return out


def test_rebalance_moves_the_fewest_nodes_and_idle_ones_first() -> None:
    per = {0: nodes(0, 5, busy=2), 1: nodes(1, 1), 2: []}
    moved = surplus_nodes(per)
    assert len(moved) == 3 and {n.shard for n in moved} == {0}
    assert all(not n.running for n in moved)  # the three idle of shard 0
    assert surplus_nodes({0: nodes(0, 2), 1: nodes(1, 1)}) == []  # differ by one: even
    assert surplus_nodes({0: nodes(0, 3)}) == []  # one shard: nothing to even out


@pytest.mark.parametrize("argv, run", [
    (["shards"], "cmd_shards"), (["shards", "--json"], "cmd_shards"),
    (["shards", "drain", "0"], "cmd_shard_drain"), (["shards", "scale", "3", "--json"],
                                                    "cmd_shard_scale"),
    (["shards", "rebalance"], "cmd_rebalance"), (["nodes"], "cmd_nodes"),
    (["nodes", "drain", "node-1", "--deadline", "30"], "cmd_node_drain"),
    (["nodes", "show", "node-1"], "cmd_node_show"), (["nodes", "undrain", "node-1"],
                                                     "cmd_node_undrain"),
])
def test_ops_commands_parse(argv: list[str], run: str) -> None:
    args = build_parser().parse_args(argv)
    assert args.run.__name__ == run


@pytest.mark.parametrize("argv", [["shards", "scale", "0"], ["shards", "drain", "x"],
                                  ["nodes", "drain", "bad id"],
                                  ["nodes", "drain", "n1", "--deadline", "-1"]])
def test_ops_commands_refuse_bad_values(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2


def test_throughput_counts_each_end_once_per_bucket_over_the_window() -> None:
    from cortexd.status.collect import Throughput

    tp = Throughput(bucket_s=10, window_s=60)
    tp.ended("t-a", 1, 1000.0)
    tp.ended("t-a", 1, 1001.0)  # the same end published twice: counted once
    tp.ended("t-b", 1, 1005.0)
    tp.ended("t-b", 2, 1012.0)  # a retry's end is another end
    series = tp.series(1015.0)
    assert len(series) == 6 and series[-2:] == [{"t": 1000, "finished": 2},
                                                 {"t": 1010, "finished": 1}]
    assert tp.total == 3
    assert sum(p["finished"] for p in tp.series(1100.0)) == 0  # out of the window
