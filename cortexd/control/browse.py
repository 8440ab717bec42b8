"""The ``Browse`` gRPC service: browser sessions on nodes, each call answered in place.

A session's handle is ``SID@NODE``: browserd's session id and the node that holds it, so
routing needs no table that a control restart would lose. The owner of a session is the
caller's identity from its credential (never from the request); the node agent passes it
to browserd, which answers ``session_not_found`` for a session of another owner (an admin
lists all). Placement: a node that advertises the browser tool in ``Hello.tools`` (label
:data:`BROWSER_LABEL`, ``cortex.tool/browser``), attached and not draining, matching the
pin or the selector, with the fewest sessions opened through this hub (ties: the least
recently picked). A node's ``ToolEvent`` ``sessions_lost`` (its browserd died) marks
those handles lost: later calls on them are ``FAILED_PRECONDITION`` and ``List`` shows
them ``lost``. Recordings: when ``record.stop`` or ``session.close`` answers with
``uploads``, each is granted to that node (cortexd/artifacts/access.py, the caller's
tenant, the name ``browse/SID/NODE/FILE``) and then uploaded by the node through the
artifacts path (a second call, ``artifact.upload``) before the answer goes back, which
lists the names under ``artifact_names`` (``cortexctl artifacts get NAME`` fetches one).
"""

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import grpc

from cortex.ids import check_labels, is_node_id
from cortex.tools import label_key
from cortex.v1 import browse_pb2, browse_pb2_grpc, node_pb2, nodecall_pb2
from cortexd.artifacts import rules
from cortexd.artifacts.access import UploadGrants, tenant_of
from cortexd.control.nodecalls import CallError, CallResult
from cortexd.control.state import HubState, NodeState
from cortexd.ingress.auth import Authenticator

TOOL = "browser"
BROWSER_LABEL = label_key(TOOL)  # from Hello.tools (cortex/tools.py)
MAX_LOST = 10_000
LIST_TIMEOUT_MS = 5_000
DEFAULT_TIMEOUT_MS = 60_000
UPLOAD_TIMEOUT_MS = 600_000
MAX_UPLOADS_PER_CALL = 16
OPS = frozenset({"navigate", "snapshot", "click", "type", "select", "hover", "press", "scroll",
                 "eval", "screenshot", "html", "console", "network", "downloads",
                 "record.start", "record.stop", "session.close", "steps"})
Ctx = grpc.aio.ServicerContext[Any, Any]


def split_handle(handle: str) -> tuple[str, str] | None:
    sid, _, node = handle.partition("@")
    if not sid.startswith("s-") or len(sid) != 18 or not is_node_id(node):
        return None
    return sid, node


def choose_node(nodes: list[NodeState], pin: str, selector: dict[str, str],
                load: dict[str, int]) -> NodeState | None:
    """Pure: the node a new session goes to, or None."""
    fit = [n for n in nodes if n.attached and not n.draining and n.labels.get(BROWSER_LABEL)
           and (not pin or n.node_id == pin)
           and all(n.labels.get(k) == v for k, v in selector.items())]
    if not fit:
        return None
    return min(fit, key=lambda n: (load.get(n.node_id, 0), n.last_picked, n.node_id))


class BrowseService(browse_pb2_grpc.BrowseServicer):
    def __init__(self, hub: HubState, auth: Authenticator,
                 grants: UploadGrants | None = None) -> None:
        self.hub = hub
        self.auth = auth
        self.grants = grants
        self.load: dict[str, int] = {}
        self.lost: OrderedDict[str, str] = OrderedDict()
        hub.node_calls.on_event(self._on_event)

    def _on_event(self, node_id: str, ev: nodecall_pb2.ToolEvent) -> None:
        if ev.tool != TOOL or ev.kind != "sessions_lost":
            return
        for sid in ev.sessions:
            self.lost[f"{sid}@{node_id}"] = ev.reason or "browserd went away"
            while len(self.lost) > MAX_LOST:
                self.lost.popitem(last=False)
        self.load[node_id] = max(0, self.load.get(node_id, 0) - len(ev.sessions))
        self.hub.log.warning("browser_sessions_lost", node=node_id, sessions=len(ev.sessions),
                             reason=ev.reason)

    async def _owner(self, context: Ctx) -> tuple[str, bool]:
        who = self.auth.identify(context.invocation_metadata())
        if who is None:  # the interceptor let it through, so this cannot happen
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no credential")
            raise AssertionError
        return who.name, who.role == "admin"

    async def _call(self, context: Ctx, node: NodeState, op: str, args: dict[str, Any],
                    owner: str, timeout_ms: int) -> CallResult:
        async def send(frame: node_pb2.HubFrame) -> None:
            await self.hub.send_node(node, frame)
        try:
            return await self.hub.node_calls.call(node.node_id, TOOL, op, args, owner,
                                                  timeout_ms, send)
        except CallError as e:
            await context.abort(getattr(grpc.StatusCode, e.code), f"{e.kind}: {e}")
            raise AssertionError from e

    def _node(self, node_id: str) -> NodeState | None:
        n = self.hub.nodes.get(node_id)
        return n if n is not None and n.attached else None

    async def Open(self, request: browse_pb2.BrowseOpenRequest,  # noqa: N802 - gRPC's name
                   context: Ctx) -> browse_pb2.BrowseSession:
        owner, _ = await self._owner(context)
        selector = dict(request.selector)
        if (err := check_labels(selector, "selector")) is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, err)
        pin = request.node_id
        resume = ""
        if request.resume:
            parts = split_handle(request.resume)
            if parts is None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"bad session {request.resume!r}: want SID@NODE")
                raise AssertionError
            resume, pin = parts
        node = choose_node(list(self.hub.nodes.values()), pin, selector, self.load)
        if node is None:
            where = f"node {pin}" if pin else f"selector {selector or '{}'}"
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"no attached node with the browser tool matches {where}")
            raise AssertionError
        node.last_picked = time.monotonic_ns()
        args: dict[str, Any] = {}
        if request.url:
            args["url"] = request.url
            args["wait_until"] = request.wait_until or "load"
        if resume:
            args["session"] = resume
        got = await self._call(context, node, "session.create", args, owner,
                               DEFAULT_TIMEOUT_MS)
        handle = f"{got.result.get('session', '')}@{node.node_id}"
        self.lost.pop(handle, None)
        self.load[node.node_id] = self.load.get(node.node_id, 0) + 1
        nav = got.result.get("navigate")
        return browse_pb2.BrowseSession(
            session=handle, node_id=node.node_id, state=str(got.result.get("state", "")),
            owner=owner, url=str((nav or {}).get("url", "")),
            result_json=json.dumps(nav) if nav else "")

    async def Call(self, request: browse_pb2.BrowseCallRequest,  # noqa: N802
                   context: Ctx) -> AsyncIterator[browse_pb2.BrowseCallReply]:
        owner, _ = await self._owner(context)
        parts = split_handle(request.session)
        if parts is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"bad session {request.session!r}: want SID@NODE")
            raise AssertionError
        sid, node_id = parts
        if request.op not in OPS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"unknown op {request.op!r}: one of {', '.join(sorted(OPS))}")
        if request.session in self.lost:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"session_lost: session {request.session} was lost: "
                                f"{self.lost[request.session]}")
        try:
            args = json.loads(request.args_json or "{}")
        except ValueError:
            args = None
        if not isinstance(args, dict):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "args_json must be an object")
            raise AssertionError
        node = self._node(node_id)
        if node is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"node {node_id} holding {request.session} is not attached")
            raise AssertionError
        args["session"] = sid
        got = await self._call(context, node, request.op, args, owner,
                               request.timeout_ms or DEFAULT_TIMEOUT_MS)
        if request.op == "session.close":
            self.load[node_id] = max(0, self.load.get(node_id, 0) - 1)
        if request.op in ("record.stop", "session.close") and b'"uploads"' in got.result_json:
            got = await self._collect(context, node, sid, got, owner)
        # The node's JSON and pieces go on as they came (the pieces were checked in
        # nodecalls; the JSON is not parsed and dumped again, only checked for its shape).
        if not got.result_json.lstrip().startswith(b"{"):
            await context.abort(grpc.StatusCode.INTERNAL,
                                f"internal: node {node_id} sent a result that is not a map")
        pieces = got.pieces or (b"",)
        yield browse_pb2.BrowseCallReply(result_json=got.result_json.decode(errors="replace"),
                                         data_size=got.size, data_sha256=got.sha256,
                                         data=pieces[0])
        offset = len(pieces[0])
        for piece in pieces[1:]:
            yield browse_pb2.BrowseCallReply(data=piece, data_offset=offset)
            offset += len(piece)

    async def _collect(self, context: Ctx, node: NodeState, sid: str, got: CallResult,
                       owner: str) -> CallResult:
        """Grant and have the node upload the recordings it named; the names (and what
        failed) are added to the result."""
        who = self.auth.identify(context.invocation_metadata())
        uploads = got.result.get("uploads")
        if self.grants is None or who is None or not isinstance(uploads, list):
            return got
        names, failed = [], []
        for up in uploads[:MAX_UPLOADS_PER_CALL]:
            if not isinstance(up, dict):
                continue
            file, sha = str(up.get("file", "")), str(up.get("sha256", ""))
            size = up.get("size")
            name = f"browse/{sid}/{node.node_id}/{file}"
            try:
                if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                    raise rules.invalid(f"bad size {size!r:.40}")
                rules.check_name(name)
                rules.check_digest(sha, size, 1 << 62)
            except rules.ArtifactError as e:
                failed.append({"file": file[:200], "error": str(e)})
                continue
            self.grants.grant(node.node_id, sha, size, tenant_of(who), name)

            async def send(frame: node_pb2.HubFrame) -> None:
                await self.hub.send_node(node, frame)
            try:
                await self.hub.node_calls.call(
                    node.node_id, TOOL, "artifact.upload",
                    {"session": sid, "file": file, "name": name, "sha256": sha,
                     "size": size}, owner, UPLOAD_TIMEOUT_MS, send)
                names.append(name)
            except CallError as e:
                failed.append({"file": file, "error": f"{e.kind}: {e}"})
            finally:
                self.grants.revoke(node.node_id, sha)
        result = {k: v for k, v in got.result.items() if k != "uploads"}
        result["artifact_names"] = names
        if failed:
            result["artifact_errors"] = failed
        return CallResult(json.dumps(result).encode(), got.pieces, got.sha256)

    async def List(self, request: browse_pb2.BrowseListRequest,  # noqa: N802
                   context: Ctx) -> browse_pb2.BrowseListResponse:
        owner, admin = await self._owner(context)
        nodes = [n for n in self.hub.nodes.values() if n.attached and n.labels.get(BROWSER_LABEL)]

        async def one(n: NodeState) -> tuple[NodeState, CallResult | None]:
            async def send(frame: node_pb2.HubFrame) -> None:
                await self.hub.send_node(n, frame)
            try:
                return n, await self.hub.node_calls.call(
                    n.node_id, TOOL, "session.list", {}, "*" if admin else owner,
                    LIST_TIMEOUT_MS, send)
            except CallError:
                return n, None
        out = browse_pb2.BrowseListResponse()
        seen = set()
        for n, got in await asyncio.gather(*(one(n) for n in nodes)):
            if got is None:
                out.unreachable_nodes.append(n.node_id)
                continue
            for s in got.result.get("sessions", []):
                handle = f"{s.get('session')}@{n.node_id}"
                seen.add(handle)
                lost = self.lost.get(handle)
                out.sessions.append(browse_pb2.BrowseSession(
                    session=handle, node_id=n.node_id,
                    state="lost" if lost is not None else str(s.get("state", "")),
                    owner=str(s.get("owner", "")), url=str(s.get("url", "")),
                    reason=lost if lost is not None else str(s.get("reason", ""))))
        for handle, reason in self.lost.items():
            if handle not in seen:
                out.sessions.append(browse_pb2.BrowseSession(
                    session=handle, node_id=handle.partition("@")[2], state="lost",
                    reason=reason))
        return out
