"""``cortexctl browse …``: browser sessions on the fleet, through the hub's Browse service.

Each command is one call that returns its result (the hub routes it to the node holding
the session, the node to its browserd). A session is named ``SID@NODE`` (printed by
``browse open``) with ``-s/--session`` or ``CORTEX_BROWSE_SESSION``. Binary results
(screenshots, HTML, recordings) arrive in pieces and are checked against their sha256
before they are written.
"""

import argparse
import hashlib
import json
import os
import sys
from typing import Any

import grpc

from cortex.cliargs import INT32_MAX, SECONDS, int_range
from cortex.tokens import bearer
from cortex.v1 import browse_pb2 as bpb
from cortex.v1 import browse_pb2_grpc
from cortexctl import exitcodes
from cortexctl.client import open_channel
from cortexctl.commands import settings
from cortexctl.errors import CtlError, UsageError, from_rpc

DEFAULT_CALL_TIMEOUT_S = 60.0


class BrowseClient:
    def __init__(self, args: argparse.Namespace) -> None:
        self.settings = settings(args)
        self.channel = open_channel(self.settings)
        self.stub: Any = browse_pb2_grpc.BrowseStub(self.channel)  # type: ignore[no-untyped-call]
        self.metadata = bearer(self.settings.token)
        self.timeout_s = max(self.settings.timeout_s, getattr(args, "call_timeout",
                                                              DEFAULT_CALL_TIMEOUT_S))

    def open(self, req: bpb.BrowseOpenRequest) -> bpb.BrowseSession:
        try:
            got: bpb.BrowseSession = self.stub.Open(req, timeout=self.timeout_s + 10,
                                                    metadata=self.metadata)
            return got
        except grpc.RpcError as e:
            raise from_rpc(e, self.settings.address, "browser session") from e

    def list(self) -> bpb.BrowseListResponse:
        try:
            got: bpb.BrowseListResponse = self.stub.List(
                bpb.BrowseListRequest(), timeout=self.timeout_s, metadata=self.metadata)
            return got
        except grpc.RpcError as e:
            raise from_rpc(e, self.settings.address) from e

    def call(self, session: str, op: str, **args: Any) -> tuple[dict[str, Any], bytes | None]:
        req = bpb.BrowseCallRequest(session=session, op=op, args_json=json.dumps(args),
                                    timeout_ms=int(self.timeout_s * 1000))
        result: dict[str, Any] = {}
        buf = bytearray()
        size, digest = 0, ""
        try:
            for i, piece in enumerate(self.stub.Call(req, timeout=self.timeout_s + 10,
                                                     metadata=self.metadata)):
                if i == 0:
                    result = json.loads(piece.result_json or "{}")
                    size, digest = piece.data_size, piece.data_sha256
                if piece.data_offset != len(buf):
                    raise CtlError("hub sent a piece out of order")
                buf += piece.data
        except grpc.RpcError as e:
            raise from_rpc(e, self.settings.address, f"session {session}") from e
        if not size:
            return result, None
        if len(buf) != size or hashlib.sha256(buf).hexdigest() != digest:
            raise CtlError(f"result of {len(buf)} bytes does not match its size {size} "
                           "and sha256: not written")
        return result, bytes(buf)


def _session(args: argparse.Namespace) -> str:
    s: str = args.session or os.environ.get("CORTEX_BROWSE_SESSION", "")
    if not s:
        raise UsageError("name the session: -s SID@NODE (or CORTEX_BROWSE_SESSION)")
    return s


def _write(data: bytes | None, path: str | None, digest_label: str = "") -> None:
    data = data or b""
    if path in (None, "-"):
        sys.stdout.buffer.write(data)
        return
    assert path is not None
    with open(path, "wb") as f:
        f.write(data)
    print(f"wrote {len(data)} bytes to {path} (sha256 {hashlib.sha256(data).hexdigest()})"
          f"{digest_label}")


def cmd_open(args: argparse.Namespace) -> int:
    selector = {}
    for item in args.selector or []:
        k, sep, v = item.partition("=")
        if not sep:
            raise UsageError(f"--selector {item!r}: want KEY=VALUE")
        selector[k] = v
    s = BrowseClient(args).open(bpb.BrowseOpenRequest(
        url=args.url or "", node_id=args.node or "", selector=selector,
        wait_until=args.wait_until, resume=args.resume or ""))
    if args.json:
        print(json.dumps({"session": s.session, "node": s.node_id, "state": s.state,
                          "url": s.url, "navigate": json.loads(s.result_json or "null")}))
    else:
        print(s.session)
    return exitcodes.OK


def cmd_ls(args: argparse.Namespace) -> int:
    got = BrowseClient(args).list()
    for s in got.sessions:
        row = {"session": s.session, "node": s.node_id, "state": s.state, "owner": s.owner,
               "url": s.url, "reason": s.reason}
        print(json.dumps(row) if args.json else
              f"{s.session:40} {s.state:8} {s.owner:12} {s.url} {s.reason}".rstrip())
    for n in got.unreachable_nodes:
        print(f"cortexctl: node {n} did not answer", file=sys.stderr)
    return exitcodes.OK


def _args_for(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    a = args.browse_action
    if a == "snapshot":
        return "snapshot", {"diff": args.diff}
    if a in ("click", "hover"):
        return a, {"ref": args.ref}
    if a == "type":
        return "type", {"ref": args.ref, "text": args.text, "submit": args.submit}
    if a == "select":
        return "select", {"ref": args.ref, "values": args.values}
    if a == "press":
        return "press", {"key": args.key, **({"ref": args.ref} if args.ref else {})}
    if a == "scroll":
        return "scroll", ({"ref": args.ref} if args.ref else {"dx": args.dx, "dy": args.dy})
    if a == "navigate":
        return "navigate", {"url": args.url, "wait_until": args.wait_until}
    if a == "eval":
        return "eval", {"js": args.js}
    if a == "screenshot":
        return "screenshot", {"full_page": args.full_page,
                              **({"ref": args.ref} if args.ref else {})}
    if a == "steps":
        try:
            steps = json.loads(args.steps)
        except ValueError as e:
            raise UsageError(f"steps: not JSON: {e}") from e
        return "steps", {"steps": steps}
    if a == "record":
        return f"record.{args.what}", {}
    if a == "close":
        return "session.close", {}
    return a, {}  # html, console, network, downloads


def cmd_call(args: argparse.Namespace) -> int:
    op, call_args = _args_for(args)
    result, data = BrowseClient(args).call(_session(args), op, **call_args)
    if op in ("screenshot", "html") or (op == "record.stop" and args.output):
        _write(data, args.output)
        for name in result.get("artifact_names", []):  # kept on the hub: artifacts get NAME
            print(f"stored as artifact {name}", file=sys.stderr)
        return exitcodes.OK
    if args.json:
        print(json.dumps(result))
    elif op == "snapshot":
        print(result.get("diff", "") if "diff" in result else result.get("text", ""))
    elif op == "eval":
        print(json.dumps(result.get("value")))
    elif op in ("console", "network", "downloads"):
        for item in next(iter(result.values()), []):
            print(json.dumps(item))
    else:
        print(json.dumps(result))
    return exitcodes.OK


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]",
               add_global_flags: Any) -> None:
    p = sub.add_parser("browse", help="browser sessions on the nodes (open, snapshot, click…)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="browse_action", metavar="ACTION", required=True)

    def action(name: str, run: Any, help_text: str, session: bool = True) -> Any:
        a = actions.add_parser(name, help=help_text, description=help_text)
        add_global_flags(a, on_command=True)
        a.add_argument("--json", action="store_true", help="the result as one JSON object")
        a.add_argument("--call-timeout", type=SECONDS, default=DEFAULT_CALL_TIMEOUT_S,
                       metavar="S", help="how long the node may take (default 60)")
        if session:
            a.add_argument("-s", "--session", metavar="SID@NODE",
                           help="the session (env CORTEX_BROWSE_SESSION)")
        a.set_defaults(run=run)
        return a

    a = action("open", cmd_open, "open a session on a node with the browser tool; print it",
               session=False)
    a.add_argument("url", nargs="?", help="navigate here first")
    a.add_argument("--node", metavar="ID", help="on this node")
    a.add_argument("--selector", action="append", metavar="K=V", help="on a node with labels")
    a.add_argument("--wait-until", default="load",
                   choices=("load", "domcontentloaded", "networkidle", "commit"))
    a.add_argument("--resume", metavar="SID@NODE", help="reopen a stored session (its profile)")
    action("ls", cmd_ls, "list the sessions", session=False)
    a = action("snapshot", cmd_call, "the page's accessibility tree, with element refs")
    a.add_argument("--diff", action="store_true", help="only what changed since the last one")
    a = action("navigate", cmd_call, "go to URL")
    a.add_argument("url")
    a.add_argument("--wait-until", default="load",
                   choices=("load", "domcontentloaded", "networkidle", "commit"))
    for name in ("click", "hover"):
        action(name, cmd_call, f"{name} the element REF").add_argument("ref")
    a = action("type", cmd_call, "fill the element REF with TEXT")
    a.add_argument("ref")
    a.add_argument("text")
    a.add_argument("--submit", action="store_true", help="press Enter after")
    a = action("select", cmd_call, "choose VALUES in the select REF")
    a.add_argument("ref")
    a.add_argument("values", nargs="+")
    a = action("press", cmd_call, "press KEY (on REF, or the page)")
    a.add_argument("key")
    a.add_argument("--ref")
    a = action("scroll", cmd_call, "scroll REF into view, or the page by --dx/--dy")
    a.add_argument("--ref")
    a.add_argument("--dx", type=int_range(-INT32_MAX, INT32_MAX), default=0)
    a.add_argument("--dy", type=int_range(-INT32_MAX, INT32_MAX), default=600)
    a = action("steps", cmd_call, "several actions in one call, in order (one round trip)")
    a.add_argument("steps", help='a JSON list, e.g. \'[{"op": "type", "ref": "e3", "text": '
                   '"x"}, {"op": "click", "ref": "e4"}]\' (ops: click type select hover press '
                   'scroll, with their fields)')
    a = action("eval", cmd_call, "evaluate JS in the page; print its JSON value")
    a.add_argument("js")
    a = action("screenshot", cmd_call, "a PNG of the viewport (or --full-page, or --ref)")
    a.add_argument("-o", "--output", required=True, metavar="FILE", help="'-' for stdout")
    a.add_argument("--full-page", action="store_true")
    a.add_argument("--ref")
    a = action("html", cmd_call, "the page's HTML")
    a.add_argument("-o", "--output", metavar="FILE")
    for name in ("console", "network", "downloads"):
        action(name, cmd_call, f"the page's {name} (JSON lines)")
    a = action("record", cmd_call, "start or stop recording the session (Motion JPEG)")
    a.add_argument("what", choices=("start", "stop"))
    a.add_argument("-o", "--output", metavar="FILE", help="stop: write the recording here")
    action("close", cmd_call, "close the session")
