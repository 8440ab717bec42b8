"""cortexctl's operator commands (issue 13): ``shards`` and ``nodes`` with their actions.

``shards`` lists; ``shards drain N`` moves its nodes to the other shards (no task or
byte of output lost: the nodes keep them and attach again) and leaves it taking
none; ``shards restart N``; ``shards scale K`` adds or removes shard processes
live; ``shards rebalance`` evens out the nodes. ``nodes`` lists; ``nodes drain
NODE [--deadline S]`` (no new tasks, running ones finish, the rest cancelled at
the deadline), ``nodes undrain NODE``, ``nodes show NODE``.

The long operations print their progress on stderr while it changes and a
summary on stdout; with ``--json`` every progress message is one JSON line on
stdout, the last with ``"done": true``. They exit 0 when the operation did what
was asked, 1 when not (the summary says why). They call ``cortex.v1.Operate``.
"""

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from cortex import ids
from cortex.cliargs import int_range
from cortex.v1 import operate_pb2 as opb
from cortex.v1 import operate_pb2_grpc
from cortexctl import commands, exitcodes, render
from cortexctl.errors import from_rpc

Command = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def progress_dict(p: opb.OpProgress) -> dict[str, Any]:
    return {"operation": p.operation, "phase": p.phase, "message": p.message,
            "done": p.done, "ok": p.ok, "elapsed_s": round(p.elapsed_s, 3),
            "counts": dict(sorted(p.counts.items()))}


def progress_line(p: opb.OpProgress) -> str:
    counts = "  ".join(f"{k}: {v}" for k, v in sorted(p.counts.items()))
    text = f"[{p.elapsed_s:6.1f}s] {p.phase:<10} {p.message}".rstrip()
    return f"{text}  ({counts})" if counts else text


class OperateClient:
    def __init__(self, args: argparse.Namespace) -> None:
        self.hub = commands.connect(args)
        self.settings = self.hub.settings
        self.stub: Any = operate_pb2_grpc.OperateStub(  # type: ignore[no-untyped-call]
            self.hub._channel)
        self.metadata = self.hub._metadata

    def __enter__(self) -> "OperateClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.hub.close()

    def stream(self, method: str, request: object, subject: str = "") -> Iterable[Any]:
        """A long operation: no deadline (it reports progress as it goes)."""
        try:
            yield from getattr(self.stub, method)(request, metadata=self.metadata)
        except grpc.RpcError as e:
            raise from_rpc(e, self.settings.address, subject) from e

    def call(self, method: str, request: object, subject: str = "") -> Any:
        try:
            return getattr(self.stub, method)(request, timeout=self.settings.timeout_s,
                                              metadata=self.metadata)
        except grpc.RpcError as e:
            raise from_rpc(e, self.settings.address, subject) from e


def run_operation(args: argparse.Namespace, method: str, request: object,
                  subject: str = "") -> int:
    last: opb.OpProgress | None = None
    shown = ""
    with OperateClient(args) as client:
        for p in client.stream(method, request, subject):
            last = p
            if args.json:
                print(json.dumps(progress_dict(p)), flush=True)
                continue
            line = progress_line(p)
            if not p.done and line.split("] ", 1)[-1] != shown:  # changed: show it
                shown = line.split("] ", 1)[-1]
                print(line, file=sys.stderr, flush=True)
    if last is None:
        print("cortexctl: the hub ended the operation without a summary", file=sys.stderr)
        return exitcodes.ERROR
    if not args.json:
        print(("" if last.ok else "FAILED: ") + progress_line(last))
    return exitcodes.OK if last.ok else exitcodes.ERROR


def _node(value: str) -> str:
    if not ids.is_node_id(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a valid node id")
    return value


def _shard(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a shard number") from None
    if not 0 <= n < 64:
        raise argparse.ArgumentTypeError(f"shard must be 0-63, not {n}")
    return n


def _count(value: str) -> int:
    n = _shard(value)
    if n < 1:
        raise argparse.ArgumentTypeError("a host runs at least 1 shard")
    return n


def _seconds(value: str) -> float:
    try:
        s = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0 < s <= 7 * 86400:
        raise argparse.ArgumentTypeError("--deadline must be between 0 and 7 days (seconds)")
    return s


# -- commands ---------------------------------------------------------------------

def cmd_shard_drain(args: argparse.Namespace) -> int:
    return run_operation(args, "DrainShard", opb.ShardRequest(shard=args.shard))


def cmd_shard_restart(args: argparse.Namespace) -> int:
    return run_operation(args, "RestartShard", opb.ShardRequest(shard=args.shard))


def cmd_shard_scale(args: argparse.Namespace) -> int:
    return run_operation(args, "ScaleShards", opb.ScaleRequest(count=args.count))


def cmd_rebalance(args: argparse.Namespace) -> int:
    return run_operation(args, "Rebalance", opb.RebalanceRequest(max_rounds=args.rounds))


def cmd_node_drain(args: argparse.Namespace) -> int:
    return run_operation(args, "DrainNode", opb.DrainNodeRequest(
        node_id=args.node, deadline_s=args.deadline or 0.0), f"node {args.node}")


def cmd_node_undrain(args: argparse.Namespace) -> int:
    with OperateClient(args) as client:
        p = client.call("UndrainNode", opb.NodeRequest(node_id=args.node), f"node {args.node}")
    print(json.dumps(progress_dict(p)) if args.json else p.message)
    return exitcodes.OK


def cmd_node_show(args: argparse.Namespace) -> int:
    with OperateClient(args) as client:
        d = client.call("ShowNode", opb.NodeRequest(node_id=args.node), f"node {args.node}")
    out = {**render.node_dict(d.node), "held": d.held, "running_tasks": list(d.running_tasks)}
    if args.json:
        print(json.dumps(out))
        return exitcodes.OK
    for key, value in out.items():
        if key == "labels":
            value = render.labels(d.node.labels)
        elif key == "running_tasks":
            value = " ".join(value) or "-"
        print(f"{key + ':':<16}{value}")
    return exitcodes.OK


def add_parsers(command: Command,
                global_flags: Callable[[argparse.ArgumentParser, bool], None]) -> None:
    """``shards`` and ``nodes``: listing by themselves, and their actions."""
    def json_flag(p: argparse.ArgumentParser, default: Any = False) -> None:
        p.add_argument("--json", action="store_true", default=default,
                       help="JSON (lines) instead of text")

    def actions(p: argparse.ArgumentParser, dest: str) -> Command:
        sub = p.add_subparsers(dest=dest, metavar="ACTION")

        def action(name: str, run: Callable[[argparse.Namespace], int],
                   help_text: str) -> argparse.ArgumentParser:
            a = sub.add_parser(name, help=help_text, description=help_text)
            a.set_defaults(run=run)
            global_flags(a, True)
            json_flag(a, argparse.SUPPRESS)  # `--json` before or after the action
            return a
        return action

    p = command("shards", commands.cmd_shards, "list the hub's shards; drain, restart, "
                "scale or rebalance them")
    json_flag(p)
    action = actions(p, "shards_action")
    a = action("drain", cmd_shard_drain, "move shard N's nodes to the other shards (no "
               "task or output lost) and stop it taking nodes until restarted")
    a.add_argument("shard", type=_shard, metavar="N")
    a = action("restart", cmd_shard_restart, "restart shard N's process (its nodes attach "
               "again)")
    a.add_argument("shard", type=_shard, metavar="N")
    a = action("scale", cmd_shard_scale, "run K shard processes on this host, live")
    a.add_argument("count", type=_count, metavar="K")
    a = action("rebalance", cmd_rebalance, "even out the nodes across the shards")
    a.add_argument("--rounds", type=int_range(0, 100), default=0, metavar="N",
                   help="at most N rounds of moves (default 6)")

    p = command("nodes", commands.cmd_nodes, "list the nodes; drain, undrain or show one")
    json_flag(p)
    action = actions(p, "nodes_action")
    a = action("drain", cmd_node_drain, "no new tasks on NODE; wait for its running ones "
               "(--deadline: then cancel the rest)")
    a.add_argument("node", type=_node, metavar="NODE")
    a.add_argument("--deadline", type=_seconds, metavar="S",
                   help="after S seconds cancel the tasks still running")
    a = action("undrain", cmd_node_undrain, "NODE takes tasks again")
    a.add_argument("node", type=_node, metavar="NODE")
    a = action("show", cmd_node_show, "one node: session, shard, load, running tasks")
    a.add_argument("node", type=_node, metavar="NODE")

