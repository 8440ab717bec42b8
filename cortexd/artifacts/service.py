"""The Artifacts gRPC service (ByteStream-style Write / Read / QueryWriteStatus and the rest).

Served by the control process on the Control port, behind the same auth interceptor
(``ARTIFACT_METHODS`` in ``cortexd/ingress/auth.py``). Every handler asks the
authenticator for the caller again and derives the owner from it (``access.py``).

Transfers end by an **idle timeout**, never an absolute deadline: a Write that receives
nothing for ``artifact_idle_timeout_s`` (a client that stopped mid-chunk, a dead peer)
is ended with DEADLINE_EXCEEDED and its partial kept for a resume; a Read whose client
stops taking data for as long is ended the same way. A 2 GiB transfer takes as long as
it takes while bytes move.
"""

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from cortex import logs
from cortex.tokens import Principal
from cortex.v1 import artifacts_pb2 as pb
from cortex.v1 import artifacts_pb2_grpc
from cortexd.artifacts import access, rules
from cortexd.artifacts.backend import ArtifactStore
from cortexd.artifacts.collect import Collector
from cortexd.artifacts.pipeline import AppendPipeline
from cortexd.artifacts.rules import ArtifactError, Retention
from cortexd.artifacts.uploads import LiveUpload, Uploads, new_hasher
from cortexd.ingress.auth import Authenticator
from cortexd.store import Store

Ctx = grpc.aio.ServicerContext[Any, Any]
_END = object()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _check_writer(live: LiveUpload, generation: int) -> None:
    if live.generation != generation:
        raise ArtifactError("ABORTED", "a newer Write stream took over this upload")


def _timed_update(hasher: Any, data: bytes) -> float:
    started = time.perf_counter()
    hasher.update(data)
    return time.perf_counter() - started


def info_pb(row: rules.ArtifactRow) -> pb.ArtifactInfo:
    return pb.ArtifactInfo(sha256=row.sha256, size_bytes=row.size_bytes, owner=row.owner,
                           created_ms=row.created_ms, last_used_ms=row.last_used_ms,
                           refs=[pb.ArtifactRef(ref=r, created_ms=c, expires_ms=e)
                                 for r, c, e in row.refs])


class ArtifactsService(artifacts_pb2_grpc.ArtifactsServicer):
    def __init__(self, store: ArtifactStore, tasks: Store, auth: Authenticator, *,
                 max_bytes: int, idle_timeout_s: float, uploads: Uploads,
                 retention: Retention) -> None:
        self.store = store
        self.tasks = tasks
        self.auth = auth
        self.max_bytes = max_bytes
        self.idle_timeout_s = idle_timeout_s
        self.uploads = uploads
        self.retention = retention
        self.collector = Collector(store, uploads, retention)
        self.grants = access.UploadGrants()  # browser recordings (cortexd/control/browse.py)
        self.log = logs.get()

    async def _principal(self, context: Ctx) -> Principal:
        principal = self.auth.identify(context.invocation_metadata())
        if principal is None:  # the interceptor already refused it; never reached
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown credential")
            raise AssertionError("unreachable")
        return principal

    async def _abort(self, context: Ctx, e: ArtifactError) -> None:
        await context.abort(getattr(grpc.StatusCode, e.code), str(e))

    async def _next(self, requests: AsyncIterator[pb.WriteRequest]) -> pb.WriteRequest | None:
        try:
            return await asyncio.wait_for(anext(requests, None), self.idle_timeout_s)
        except TimeoutError:
            raise ArtifactError("DEADLINE_EXCEEDED",
                                f"no data for {self.idle_timeout_s:g} s: upload ended (the "
                                "committed part is kept; resume with QueryWriteStatus)") from None

    async def _writer(self, principal: Principal, task_id: str, sha: str, size: int,
                      name: str | None) -> str:
        """The owner a write acts as: a node without a task only for a granted blob, and a
        Write (``name`` not None) only under the granted name (access.UploadGrants)."""
        if principal.role == "node" and not task_id:
            g = self.grants.find(principal.name, sha, size)
            if g is None or (name is not None and name != g.name):
                raise ArtifactError("PERMISSION_DENIED", "a node writes artifacts only for a "
                                    "task, or a blob the hub asked it to upload, under its "
                                    "name")
            return g.owner
        return await access.owner_for(self.tasks, principal, task_id, writing=True)

    # -- Write ---------------------------------------------------------------
    async def Write(self, request_iterator: AsyncIterator[pb.WriteRequest],  # noqa: N802
                    context: Ctx) -> pb.WriteResponse:
        principal = await self._principal(context)
        try:
            return await self._write(principal, request_iterator)
        except ArtifactError as e:
            self.log.info("artifact_write_refused", principal=principal.name, code=e.code,
                          reason=str(e))
            await self._abort(context, e)
            raise

    async def _write(self, principal: Principal,
                     requests: AsyncIterator[pb.WriteRequest]) -> pb.WriteResponse:
        first = await self._next(requests)
        if first is None:
            raise rules.invalid("empty Write stream: the first message names the blob")
        sha, size = first.digest.sha256, first.digest.size_bytes
        rules.check_digest(sha, size, self.max_bytes)
        if first.name:
            rules.check_name(first.name)
        owner = await self._writer(principal, first.task_id, sha, size, first.name)
        refs = [(rules.name_ref(first.name), 0)] if first.name else []
        if await self.store.get(owner, sha) is not None:  # nothing to send again
            await self.store.add_refs(owner, sha, refs, _now_ms())
            return pb.WriteResponse(committed_size=size, complete=True)
        self.uploads.enter(principal.name)
        key = (owner, sha)
        live, generation = self.uploads.attach(key)
        stages = {"receive_s": 0.0, "hash_s": 0.0}
        pipe: AppendPipeline | None = None
        try:
            await self.store.begin(owner, sha, size, _now_ms())
            pipe = AppendPipeline(
                lambda at, data: self._append(live, generation, owner, sha, at, data, stages),
                await self._start(live, generation, owner, sha))
            msg: pb.WriteRequest | None = first
            while msg is not None:
                if (msg.digest.sha256, msg.digest.size_bytes) != (sha, size):
                    raise rules.invalid("the digest changed within one Write stream")
                _check_writer(live, generation)
                data = msg.data  # one copy out of the message, handed on as it is
                try:
                    rules.check_chunk(pipe.accepted, size, msg.write_offset, len(data),
                                      msg.finish_write)
                except ArtifactError:  # say what is committed, not what is queued
                    rules.check_chunk(await pipe.close(), size, msg.write_offset,
                                      len(data), msg.finish_write)
                    raise
                if data:
                    await pipe.put(msg.write_offset, data)
                if msg.finish_write:
                    await pipe.close()
                    async with live.lock:
                        _check_writer(live, generation)
                        await self._finish(live, owner, sha, size, refs,
                                           stages | {"write_s": pipe.write_s,
                                                     "queue_wait_s": pipe.wait_s})
                    return pb.WriteResponse(committed_size=size, complete=True)
                started = time.monotonic()
                msg = await self._next(requests)
                stages["receive_s"] += time.monotonic() - started
            return pb.WriteResponse(committed_size=await pipe.close(), complete=False)
        finally:
            if pipe is not None:
                await pipe.stop()
            self.uploads.detach(key)
            self.uploads.leave(principal.name)

    async def _start(self, live: LiveUpload, generation: int, owner: str, sha: str) -> int:
        """Where this stream's appends start: the offset this hub's running hash has
        reached, rebuilt from the committed bytes when there is none (a hub restart)."""
        async with live.lock:
            _check_writer(live, generation)
            if live.hasher is None:
                committed = await self.store.committed(owner, sha)
                if committed is None:
                    raise ArtifactError("NOT_FOUND", "the upload is gone (collected); "
                                        "start again")
                await self._rehash(live, owner, sha, committed)
            return live.hashed

    async def _append(self, live: LiveUpload, generation: int, owner: str, sha: str,
                      offset: int, data: bytes, stages: dict[str, float]) -> int:
        """Append one chunk (the pipeline's writer, in order). The store refuses an append
        anywhere but at its committed end (another hub appending meanwhile: the hash is
        rebuilt by the next stream); the write and the hash of a chunk run at once, off
        the loop."""
        async with live.lock:
            _check_writer(live, generation)
            if live.hasher is None or live.hashed != offset:
                raise ArtifactError("ABORTED", "the upload moved under this stream; resume "
                                    "from QueryWriteStatus")
            self.uploads.reserve(len(data))
            loop = asyncio.get_running_loop()
            hashing = loop.run_in_executor(None, _timed_update, live.hasher, data)
            try:
                end = await self.store.append(owner, sha, offset, data, _now_ms())
            except BaseException:
                self.uploads.release(len(data))
                await asyncio.gather(hashing, return_exceptions=True)
                live.hasher = None  # the partial may hold part of the chunk: re-read it
                raise
            stages["hash_s"] += await hashing
            live.hashed = end
            return end

    async def _rehash(self, live: LiveUpload, owner: str, sha: str, committed: int) -> None:
        """Rebuild the running sha256 from the committed bytes (after a hub restart)."""
        hasher, n = new_hasher(), 0
        loop = asyncio.get_running_loop()
        async for chunk in self.store.read_partial(owner, sha):
            chunk = chunk[:committed - n]
            await loop.run_in_executor(None, hasher.update, chunk)
            n += len(chunk)
            if n >= committed:
                break
        live.hasher, live.hashed = hasher, n

    async def _finish(self, live: LiveUpload, owner: str, sha: str, size: int,
                      refs: list[tuple[str, int]], stages: dict[str, float]) -> None:
        started = time.monotonic()
        got = live.hasher.hexdigest()
        if got != sha:
            await self.store.discard(owner, sha)
            self.uploads.release(size)
            live.hasher, live.hashed = None, 0
            self.log.warning("artifact_refused", owner=owner, sha256=sha, got=got, size=size)
            raise rules.invalid(f"sha256 mismatch: the {size} bytes received hash to {got}, "
                                f"not {sha}; nothing was kept")
        async with self.uploads.finish_lock:
            await self.store.finish(owner, sha, size, _now_ms())
        self.uploads.release(size)
        await self.store.add_refs(owner, sha, refs, _now_ms())
        self.log.info("artifact_stored", owner=owner, sha256=sha, size=size,
                      finish_s=round(time.monotonic() - started, 3),
                      **{k: round(v, 3) for k, v in stages.items()})

    async def QueryWriteStatus(self, request: pb.QueryWriteStatusRequest,  # noqa: N802
                               context: Ctx) -> pb.QueryWriteStatusResponse:
        principal = await self._principal(context)
        sha, size = request.digest.sha256, request.digest.size_bytes
        try:
            rules.check_digest(sha, size, self.max_bytes)
            owner = await self._writer(principal, request.task_id, sha, size, None)
            if await self.store.get(owner, sha) is not None:
                return pb.QueryWriteStatusResponse(committed_size=size, complete=True)
            return pb.QueryWriteStatusResponse(
                committed_size=await self.store.committed(owner, sha) or 0)
        except ArtifactError as e:
            await self._abort(context, e)
            raise

    # -- Read ----------------------------------------------------------------
    async def _resolve(self, owner: str, sha: str, name: str) -> rules.ArtifactRow:
        if name:
            rules.check_name(name)
            found = await self.store.resolve(owner, rules.name_ref(name))
            if found is None:
                raise ArtifactError("NOT_FOUND", f"no artifact named {name!r}")
            sha = found
        if not rules.SHA256_RE.fullmatch(sha):
            raise rules.invalid(f"sha256 {sha[:80]!r} is not 64 lowercase hex digits")
        row = await self.store.get(owner, sha)
        if row is None:
            raise ArtifactError("NOT_FOUND", f"no artifact {sha}")
        return row

    async def Read(self, request: pb.ReadRequest, context: Ctx) -> None:  # noqa: N802
        principal = await self._principal(context)
        try:
            owner = await access.owner_for(self.tasks, principal, request.task_id,
                                           sha256=request.sha256)
            row = await self._resolve(owner, request.sha256, request.name)
            if request.read_offset > row.size_bytes:
                raise ArtifactError("OUT_OF_RANGE", f"read_offset {request.read_offset} is "
                                    f"past the end ({row.size_bytes})")
            await self.store.add_refs(owner, row.sha256, [], _now_ms())  # last use
            offset = request.read_offset
            first = pb.ReadResponse(offset=offset, size_bytes=row.size_bytes,
                                    sha256=row.sha256)
            if offset == row.size_bytes:
                await self._send(context, first)
                return
            async for data in self.store.read(row.sha256, offset, request.read_limit):
                first.data = data
                await self._send(context, first)
                offset += len(data)
                first = pb.ReadResponse(offset=offset)
        except ArtifactError as e:
            await self._abort(context, e)

    async def _send(self, context: Ctx, msg: pb.ReadResponse) -> None:
        try:
            await asyncio.wait_for(context.write(msg), self.idle_timeout_s)
        except TimeoutError:
            raise ArtifactError("DEADLINE_EXCEEDED", f"the reader took nothing for "
                                f"{self.idle_timeout_s:g} s") from None

    # -- the rest ------------------------------------------------------------
    async def Stat(self, request: pb.StatRequest, context: Ctx) -> pb.ArtifactInfo:  # noqa: N802
        owner = access.tenant_of(await self._principal(context))
        try:
            return info_pb(await self._resolve(owner, request.sha256, request.name))
        except ArtifactError as e:
            await self._abort(context, e)
            raise

    async def List(self, request: pb.ListArtifactsRequest,  # noqa: N802
                   context: Ctx) -> pb.ListArtifactsResponse:
        owner = access.tenant_of(await self._principal(context))
        rows = await self.store.list_rows(owner, min(request.limit or 1000, 10_000))
        return pb.ListArtifactsResponse(artifacts=[info_pb(r) for r in rows])

    async def Remove(self, request: pb.RemoveArtifactRequest,  # noqa: N802
                     context: Ctx) -> pb.RemoveArtifactResponse:
        owner = access.tenant_of(await self._principal(context))
        try:
            if request.name:
                rules.check_name(request.name)
                n = await self.store.remove_refs(owner, ref=rules.name_ref(request.name))
            else:
                row = await self._resolve(owner, request.sha256, "")
                n = await self.store.remove_refs(owner, sha256=row.sha256)
        except ArtifactError as e:
            await self._abort(context, e)
            raise
        return pb.RemoveArtifactResponse(refs_removed=n)

    async def Collect(self, request: pb.CollectRequest,  # noqa: N802
                      context: Ctx) -> pb.CollectResponse:
        return await self.collector.run(_now_ms(), dry_run=request.dry_run)

    async def AttachOutputs(self, request: pb.AttachOutputsRequest,  # noqa: N802
                            context: Ctx) -> pb.AttachOutputsResponse:
        principal = await self._principal(context)
        try:
            task = await access.node_task(self.tasks, principal, request.task_id)
            if request.attempt != task.attempt:
                raise ArtifactError("FAILED_PRECONDITION", f"attempt {request.attempt} of "
                                    f"{task.task_id} is not the current one")
            expires = _now_ms() + int(self.retention.task_ref_s * 1000)
            for out in request.outputs:
                if out.path not in task.outputs:
                    raise rules.invalid(f"{out.path!r} is not an output of {task.task_id}")
                ref = rules.task_ref(task.task_id, "out", out.path)
                if out.error:
                    continue  # listed on the task from the node's report, nothing stored
                if await self.store.get(task.tenant, out.digest.sha256) is None:
                    raise ArtifactError("FAILED_PRECONDITION", f"output {out.path!r}: "
                                        f"{out.digest.sha256} was not uploaded")
                await self.store.add_refs(task.tenant, out.digest.sha256, [(ref, expires)],
                                          _now_ms())
        except ArtifactError as e:
            await self._abort(context, e)
            raise
        return pb.AttachOutputsResponse()

    # -- for the Control service ----------------------------------------------
    async def task_outputs(self, task_id: str, tenant: str) -> list[pb.TaskOutputFile]:
        """The outputs attached to a task (for ``Task.outputs``)."""
        prefix = f"task:{task_id}:out:"
        return [pb.TaskOutputFile(path=ref[len(prefix):],
                                  digest=pb.Digest(sha256=sha, size_bytes=size))
                for ref, sha, size in await self.store.task_refs(tenant, task_id)
                if ref.startswith(prefix)]

    async def pin_inputs(self, task_id: str, tenant: str,
                         inputs: list[tuple[str, int, str]]) -> None:
        """Check a submission's inputs exist for its tenant, and reference them."""
        expires = _now_ms() + int(self.retention.task_ref_s * 1000)
        for sha, size, path in inputs:
            row = await self.store.get(tenant, sha)
            if row is None or row.size_bytes != size:
                raise ArtifactError("FAILED_PRECONDITION", f"input {path!r}: artifact {sha} "
                                    f"({size} bytes) is not on the hub; upload it first "
                                    "(cortexctl artifacts put)")
            await self.store.add_refs(tenant, sha, [(rules.task_ref(task_id, "in", path),
                                                     expires)], _now_ms())
