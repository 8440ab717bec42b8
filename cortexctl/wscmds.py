"""``cortexctl workspace create/attach/status/sync/conflicts/resolve/detach``.

``create NAME --from DIR`` scans DIR (the same scanner the node and hub use: ignores in
``.cortexignore``, executable bits, symlinks kept, escaping ones refused), asks the hub
which blobs it lacks, pushes only those (1 MiB chunks) and seeds the hub's tree.
``--json`` prints one JSON object per item.
"""

import argparse
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from cortex.cliargs import float_range
from cortex.tokens import bearer
from cortex.v1 import workspace_pb2 as wpb
from cortex.v1 import workspace_pb2_grpc
from cortex.wsmerge import FILE
from cortex.wstree import CHUNK_BYTES, TreeScanner
from cortexctl import commands
from cortexctl.client import open_channel
from cortexctl.errors import UsageError, from_rpc

BATCH = 2000


class _Ctl:
    def __init__(self, args: argparse.Namespace) -> None:
        self.settings = commands.settings(args)
        self.channel = open_channel(self.settings)
        self.stub = workspace_pb2_grpc.WorkspacesStub(self.channel)  # type: ignore[no-untyped-call]
        self.md = bearer(self.settings.token)

    def call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        try:
            return getattr(self.stub, method)(request, metadata=self.md,
                                              timeout=timeout or self.settings.timeout_s)
        except grpc.RpcError as e:
            raise from_rpc(e, self.settings.address) from e


def _print(args: argparse.Namespace, msg: Any, text: str) -> None:
    if args.json:
        print(json.dumps(MessageToDict(msg, preserving_proto_field_name=True)))
    else:
        print(text)


def _info_text(w: wpb.WorkspaceInfo) -> str:
    lines = [f"{w.name}  hub {w.hub_path}  {w.hub_entries} entries  "
             f"tree {w.hub_tree_digest[:12]}"]
    for a in w.attachments:
        state = "in sync" if a.node_tree_digest == w.hub_tree_digest and not a.pending \
            else f"{a.pending} pending" if a.pending else "differs"
        lines.append(f"  {a.node_id}:{a.path}  {'online' if a.online else 'offline'}  "
                     f"rounds {a.rounds}  {state}  conflicts {a.open_conflicts}"
                     + (f"  refused {', '.join(a.refused)}" if a.refused else ""))
    return "\n".join(lines)


def _blob_chunks(root: Path, paths: dict[str, str], need: list[str]) -> Iterator[wpb.BlobChunk]:
    for sha in need:
        path = root / paths[sha]
        size = path.stat().st_size
        with open(path, "rb") as f:
            offset = 0
            while True:
                data = f.read(CHUNK_BYTES)
                last = offset + len(data) >= size or not data
                yield wpb.BlobChunk(sha256=sha, size_bytes=size, offset=offset, data=data,
                                    last=last)
                offset += len(data)
                if last:
                    break


def cmd_create(args: argparse.Namespace) -> int:
    ctl = _Ctl(args)
    info = ctl.call("Create", wpb.CreateWorkspaceRequest(name=args.name))
    if args.source:
        root = Path(args.source)
        if not root.is_dir():
            raise UsageError(f"--from {root}: not a directory")
        scanner = TreeScanner(root)
        tree = scanner.scan()
        paths = scanner.by_digest()
        missing = ctl.call("Missing", wpb.MissingRequest(sha256=sorted(paths)), 600.0).sha256
        if missing:
            ctl.call("Push", _blob_chunks(root, paths, list(missing)), 3600.0)
        entries = [wpb.WsEntry(path=p, kind=e.kind, digest=e.digest, executable=e.executable)
                   for p, e in tree.items()]

        def seed() -> Iterator[wpb.SeedRequest]:
            for i in range(0, max(len(entries), 1), BATCH):
                yield wpb.SeedRequest(workspace=args.name, entries=entries[i:i + BATCH])
            yield wpb.SeedRequest(done=True)
        ctl.call("Seed", seed(), 3600.0)
        info = ctl.call("Status", wpb.WorkspaceStatusRequest(workspace=args.name)).workspaces[0]
        if scanner.refused:
            print(f"refused (symlinks leaving {root}): {', '.join(scanner.refused)}")
        print(f"pushed {len(missing)} of {sum(e.kind == FILE for e in tree.values())} files")\
            if not args.json else None
    _print(args, info, _info_text(info))
    return 0


def cmd_attach(args: argparse.Namespace) -> int:
    info = _Ctl(args).call("Attach", wpb.AttachWorkspaceRequest(
        workspace=args.name, node_id=args.node, path=args.path))
    _print(args, info, _info_text(info))
    return 0


def cmd_detach(args: argparse.Namespace) -> int:
    info = _Ctl(args).call("Detach", wpb.DetachWorkspaceRequest(workspace=args.name,
                                                                 node_id=args.node))
    _print(args, info, _info_text(info))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    got = _Ctl(args).call("Status", wpb.WorkspaceStatusRequest(workspace=args.name or ""))
    for w in got.workspaces:
        _print(args, w, _info_text(w))
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    got = _Ctl(args).call("SyncNow", wpb.SyncNowRequest(workspace=args.name,
                                                       timeout_s=args.wait),
                          args.wait + 10.0)
    for w in got.workspaces:
        _print(args, w, _info_text(w))
    return 0


def _side(e: wpb.WsEntry, present: bool) -> str:
    if not present:
        return "deleted"
    return f"{e.kind} {e.digest[:12]}" + (" +x" if e.executable else "")


def cmd_conflicts(args: argparse.Namespace) -> int:
    got = _Ctl(args).call("Conflicts", wpb.ConflictsRequest(
        workspace=args.name or "", include_resolved=args.all))
    for c in got.conflicts:
        _print(args, c, f"#{c.id} {c.workspace} {c.node_id} {c.path}: hub "
               f"{_side(c.hub, c.HasField('hub'))} | node {_side(c.node, c.HasField('node'))}"
               + (f"  resolved: {c.resolution}" if c.resolved_ms else ""))
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    target = args.conflict
    req = wpb.ResolveRequest(workspace=args.name, keep=args.keep, node_id=args.node or "")
    if target.isdigit():
        req.id = int(target)
    else:
        req.path = target
    c = _Ctl(args).call("Resolve", req)
    _print(args, c, f"#{c.id} {c.path}: kept the {c.resolution}'s version")
    return 0


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]",
               global_flags: Callable[[argparse.ArgumentParser, bool], None]) -> None:
    p = sub.add_parser("workspace", help="directory trees kept in sync between hub and nodes",
                       description="Workspaces: a tree on the hub with copies on nodes, "
                                   "synced both ways; changes on both sides are conflicts.")
    actions = p.add_subparsers(dest="workspace_action", metavar="ACTION", required=True)

    def action(name: str, run: Callable[[argparse.Namespace], int],
               help_text: str) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help_text, description=help_text)
        global_flags(a, True)
        a.add_argument("--json", action="store_true", help="one JSON object (line) per item")
        a.set_defaults(run=run)
        return a

    a = action("create", cmd_create, "create a workspace (its hub tree filled from --from DIR)")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--from", dest="source", metavar="DIR", help="fill it from this directory")
    a = action("attach", cmd_attach, "keep a copy of NAME on node N at path P")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--node", required=True, metavar="N")
    a.add_argument("--path", required=True, metavar="P", help="absolute path on the node")
    a = action("detach", cmd_detach, "stop syncing NAME on node N (its copy stays)")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--node", required=True, metavar="N")
    a = action("status", cmd_status, "workspaces, their attachments and how in sync they are")
    a.add_argument("name", metavar="NAME", nargs="?")
    a = action("sync", cmd_sync, "sync NAME now: every online copy runs a round")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--wait", type=float_range(0.1, 3600.0), default=30.0, metavar="S",
                   help="how long to wait for the rounds (default 30)")
    a = action("conflicts", cmd_conflicts, "paths changed on both sides (open ones)")
    a.add_argument("name", metavar="NAME", nargs="?")
    a.add_argument("--all", action="store_true", help="resolved ones too")
    a = action("resolve", cmd_resolve, "end a conflict by keeping one side's version")
    a.add_argument("name", metavar="NAME")
    a.add_argument("conflict", metavar="ID|PATH")
    a.add_argument("--keep", required=True, choices=("hub", "node"))
    a.add_argument("--node", metavar="N", help="with a PATH open on several nodes")
