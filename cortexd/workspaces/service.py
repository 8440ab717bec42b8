"""The ``Workspaces`` gRPC service (workspace.proto) on the Control port: validation and
conversion only; what it does is ``hub.py``'s. A node acts as itself (its credential's
name is its node id) on the workspaces attached to it; clients act as their tenant's
owner (``access.tenant_of``, ``default`` today).
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from cortex import logs
from cortex.ids import WORKSPACE_NAME_RE
from cortex.tokens import Principal
from cortex.v1 import workspace_pb2 as wpb
from cortex.v1 import workspace_pb2_grpc
from cortex.wsmerge import FILE, Entry, WorkspacePathError, check_path, tree_digest
from cortexd.artifacts.access import tenant_of
from cortexd.ingress.auth import Authenticator
from cortexd.workspaces.blobs import BlobDir, PushRefused, pull_chunks
from cortexd.workspaces.hub import Workspace, WorkspaceError, WorkspaceHub
from cortexd.workspaces.records import ConflictRow

Ctx = grpc.aio.ServicerContext[Any, Any]
NAME = WORKSPACE_NAME_RE
BATCH = 2000  # entries per message (well under the 1 MiB frame)
MAX_ENTRIES = 1_000_000


def entry_pb(path: str, e: Entry | None, size: int = 0) -> wpb.WsEntry | None:
    if e is None:
        return None
    return wpb.WsEntry(path=path, kind=e.kind, digest=e.digest, executable=e.executable,
                       size_bytes=size)


def entry_of(m: wpb.WsEntry) -> tuple[str, Entry]:
    return check_path(m.path), Entry(m.kind, m.digest, m.executable)


def conflict_pb(c: ConflictRow) -> wpb.WorkspaceConflict:
    return wpb.WorkspaceConflict(
        id=c.id, workspace=c.workspace, node_id=c.node_id, path=c.path,
        base=entry_pb(c.path, c.base), hub=entry_pb(c.path, c.hub),
        node=entry_pb(c.path, c.node), created_ms=c.created_ms,
        resolved_ms=c.resolved_ms, resolution=c.resolution)


class WorkspacesService(workspace_pb2_grpc.WorkspacesServicer):
    def __init__(self, hub: WorkspaceHub, auth: Authenticator) -> None:
        self.hub = hub
        self.auth = auth
        self.log = logs.get()

    async def _who(self, context: Ctx) -> Principal:
        principal = self.auth.identify(context.invocation_metadata())
        if principal is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown credential")
            raise AssertionError("unreachable")
        return principal

    async def _space(self, context: Ctx, name: str) -> tuple[Principal, Workspace]:
        who = await self._who(context)
        try:
            ws = self.hub.get(tenant_of(who), name)
            if who.role == "node":
                self.hub.attachment(ws, who.name)
        except WorkspaceError as e:
            await context.abort(getattr(grpc.StatusCode, e.code), str(e))
            raise AssertionError("unreachable") from e
        return who, ws

    async def _fail(self, context: Ctx, e: Exception) -> None:
        code = e.code if isinstance(e, WorkspaceError) else "INVALID_ARGUMENT"
        await context.abort(getattr(grpc.StatusCode, code), str(e))

    def info(self, ws: Workspace) -> wpb.WorkspaceInfo:
        tree = {p: e for p, (_, e, _) in ws.scanner.cache.items()}
        return wpb.WorkspaceInfo(
            name=ws.name, owner=ws.owner, created_ms=ws.created_ms, hub_path=str(ws.root),
            hub_tree_digest=tree_digest(tree), hub_entries=len(tree),
            attachments=[wpb.WsAttachment(
                node_id=n, path=a.row.path, attached_ms=a.row.attached_ms,
                synced_ms=a.synced_ms, rounds=a.rounds, node_tree_digest=a.node_digest,
                online=n in self.hub.followers, open_conflicts=len(a.open),
                refused=a.refused, pending=a.pending)
                for n, a in sorted(ws.attachments.items())])

    async def _fresh_info(self, ws: Workspace) -> wpb.WorkspaceInfo:
        async with ws.lock:
            await asyncio.to_thread(ws.scanner.scan)
        return self.info(ws)

    # -- clients -------------------------------------------------------------------
    async def Create(self, request: wpb.CreateWorkspaceRequest,
                     context: Ctx) -> wpb.WorkspaceInfo:
        who = await self._who(context)
        if not NAME.fullmatch(request.name):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "a workspace name is [a-z0-9][a-z0-9._-]{0,62}")
        try:
            ws = await self.hub.create(tenant_of(who), request.name)
        except WorkspaceError as e:
            await self._fail(context, e)
            raise
        self.log.info("workspace_created", workspace=ws.name)
        return self.info(ws)

    async def Seed(self, request_iterator: AsyncIterator[wpb.SeedRequest],
                   context: Ctx) -> wpb.SeedResponse:
        entries: list[tuple[str, Entry]] = []
        name = ""
        try:
            async for m in request_iterator:
                name = name or m.workspace
                entries.extend(entry_of(e) for e in m.entries)
                if len(entries) > MAX_ENTRIES:
                    raise WorkspaceError("RESOURCE_EXHAUSTED", "too many entries")
        except (WorkspaceError, WorkspacePathError) as e:
            await self._fail(context, e)
        _, ws = await self._space(context, name)
        entries.sort(key=lambda pe: pe[0])
        missing = [p for p, e in entries if e.kind == FILE and not self.hub.blobs.has(e.digest)]
        if missing:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"{len(missing)} files' blobs not pushed (first {missing[0]!r})")
        try:
            n = await self.hub.seed(ws, entries)
        except WorkspaceError as e:
            await self._fail(context, e)
            raise
        info = await self._fresh_info(ws)
        return wpb.SeedResponse(entries=n, tree_digest=info.hub_tree_digest)

    async def Attach(self, request: wpb.AttachWorkspaceRequest,
                     context: Ctx) -> wpb.WorkspaceInfo:
        who = await self._who(context)
        path = request.path
        if not path.startswith("/") or path.rstrip("/") == "" or "\x00" in path \
                or "/../" in path + "/" or not request.node_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "attach needs a node and an absolute path (not /, no ..)")
        try:
            ws = await self.hub.attach(tenant_of(who), request.workspace, request.node_id,
                                       path.rstrip("/"))
        except WorkspaceError as e:
            await self._fail(context, e)
            raise
        return self.info(ws)

    async def Detach(self, request: wpb.DetachWorkspaceRequest,
                     context: Ctx) -> wpb.WorkspaceInfo:
        who = await self._who(context)
        try:
            ws = await self.hub.detach(tenant_of(who), request.workspace, request.node_id)
        except WorkspaceError as e:
            await self._fail(context, e)
            raise
        return self.info(ws)

    async def Status(self, request: wpb.WorkspaceStatusRequest,
                     context: Ctx) -> wpb.WorkspaceStatusResponse:
        who = await self._who(context)
        owner = tenant_of(who)
        spaces = [ws for (o, n), ws in sorted(self.hub.spaces.items())
                  if o == owner and (not request.workspace or n == request.workspace)]
        if request.workspace and not spaces:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no workspace {request.workspace!r}")
        return wpb.WorkspaceStatusResponse(workspaces=[await self._fresh_info(ws)
                                                       for ws in spaces])

    async def SyncNow(self, request: wpb.SyncNowRequest,
                      context: Ctx) -> wpb.WorkspaceStatusResponse:
        _, ws = await self._space(context, request.workspace)
        await self.hub.sync_now(ws, request.timeout_s or 30.0)
        return wpb.WorkspaceStatusResponse(workspaces=[await self._fresh_info(ws)])

    async def Conflicts(self, request: wpb.ConflictsRequest,
                        context: Ctx) -> wpb.ConflictsResponse:
        who = await self._who(context)
        rows = await self.hub.records.conflicts(tenant_of(who), request.workspace,
                                                request.include_resolved)
        return wpb.ConflictsResponse(conflicts=[conflict_pb(c) for c in rows])

    async def Resolve(self, request: wpb.ResolveRequest,
                      context: Ctx) -> wpb.WorkspaceConflict:
        who, ws = await self._space(context, request.workspace)
        if request.keep not in ("hub", "node"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "keep is hub or node")
        rows = [c for c in await self.hub.records.conflicts(ws.owner, ws.name)
                if (request.id and c.id == request.id) or (
                    not request.id and c.path == request.path
                    and (not request.node_id or c.node_id == request.node_id))]
        if len(rows) != 1:
            await context.abort(grpc.StatusCode.NOT_FOUND if not rows else
                                grpc.StatusCode.INVALID_ARGUMENT,
                                "no such open conflict" if not rows else
                                "several open conflicts match: name the id or the node")
        try:
            await self.hub.resolve(ws, rows[0], request.keep)
        except WorkspaceError as e:
            await self._fail(context, e)
        done = [c for c in await self.hub.records.conflicts(ws.owner, ws.name, True)
                if c.id == rows[0].id]
        return conflict_pb(done[0])

    # -- clients and nodes: bytes --------------------------------------------------
    async def Missing(self, request: wpb.MissingRequest,
                      context: Ctx) -> wpb.MissingResponse:
        await self._who(context)
        return wpb.MissingResponse(sha256=[s for s in request.sha256
                                           if not self.hub.blobs.has(s)])

    async def Push(self, request_iterator: AsyncIterator[wpb.BlobChunk],
                   context: Ctx) -> wpb.PushResponse:
        await self._who(context)
        blobs = BlobDir(self.hub.blob_root)
        out = wpb.PushResponse()
        try:
            async for m in request_iterator:
                got = blobs.receive(m.sha256, m.size_bytes, m.offset, m.data, m.last)
                out.bytes += len(m.data)
                if got is True:
                    out.stored += 1
                elif got is False:
                    out.refused += 1
        except PushRefused as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        finally:
            blobs.close()
        return out

    async def Pull(self, request: wpb.PullRequest,
                   context: Ctx) -> AsyncIterator[wpb.BlobChunk]:
        _, ws = await self._space(context, request.workspace)
        for f in request.files:
            try:
                rel = check_path(f.path)
            except WorkspacePathError as e:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            gen = pull_chunks(self.hub.blobs, ws.root, rel, f.digest)
            if f.size_bytes <= (4 << 20):  # small: one hop to the thread
                for piece in await asyncio.to_thread(list, gen):
                    yield self._chunk(f, *piece)
                continue
            while (piece := await asyncio.to_thread(next, gen, None)) is not None:  # type: ignore[arg-type]
                yield self._chunk(f, *piece)

    @staticmethod
    def _chunk(f: wpb.WsEntry, offset: int, data: bytes, last: bool,
               error: str) -> wpb.BlobChunk:
        return wpb.BlobChunk(sha256=f.digest, size_bytes=f.size_bytes, offset=offset,
                             data=data, last=last, path=f.path, error=error)

    # -- nodes: rounds -------------------------------------------------------------
    async def Follow(self, request: wpb.FollowRequest,
                     context: Ctx) -> AsyncIterator[wpb.FollowEvent]:
        who = await self._who(context)
        if who.role != "node":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "Follow is for nodes")
        q: asyncio.Queue[wpb.FollowEvent] = asyncio.Queue(maxsize=1024)
        self.hub.followers[who.name] = q
        self.log.info("workspace_follow", node=who.name)
        try:
            yield wpb.FollowEvent(attachments=self.hub.attachments_of(who.name),
                                  attachments_changed=True)
            while True:
                yield await q.get()
        finally:
            if self.hub.followers.get(who.name) is q:
                del self.hub.followers[who.name]

    async def Plan(self, request_iterator: AsyncIterator[wpb.PlanRequest],
                   context: Ctx) -> AsyncIterator[wpb.PlanResponse]:
        name, refused = "", []
        node: dict[str, Entry] = {}
        try:
            async for m in request_iterator:
                name = name or m.workspace
                node.update(entry_of(e) for e in m.entries)
                refused.extend(m.refused[:1000])
                if len(node) > MAX_ENTRIES:
                    raise WorkspaceError("RESOURCE_EXHAUSTED", "too many entries")
                if m.done:
                    break
        except (WorkspaceError, WorkspacePathError) as e:
            await self._fail(context, e)
        who, ws = await self._space(context, name)
        try:
            rnd, need, conflicts = await self.hub.plan(ws, who.name, node, refused[:1000])
        except WorkspaceError as e:
            await self._fail(context, e)
            raise
        sizes = ws.scanner.size_of
        acts = [wpb.WsAction(path=a.path, entry=entry_pb(a.path, a.entry, sizes(a.path)))
                for a in rnd.to_node]
        for i in range(0, max(len(acts), len(need), 1), BATCH):
            yield wpb.PlanResponse(to_node=acts[i:i + BATCH], need=need[i:i + BATCH])
        yield wpb.PlanResponse(round=rnd.id, conflicts=conflicts, to_hub=len(rnd.to_hub),
                               done=True)

    async def Commit(self, request: wpb.CommitRequest,
                     context: Ctx) -> wpb.CommitResponse:
        who, ws = await self._space(context, request.workspace)
        try:
            applied, skipped = await self.hub.commit(ws, who.name, request.round,
                                                     list(request.failed))
        except WorkspaceError as e:
            await self._fail(context, e)
            raise
        return wpb.CommitResponse(applied_hub=applied, skipped_hub=skipped,
                                  hub_tree_digest=self.info(ws).hub_tree_digest)
