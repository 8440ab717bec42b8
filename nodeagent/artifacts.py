"""A task's artifacts on the node: inputs fetched before it runs, outputs after it ends.

The node talks to the hub's ``Artifacts`` service on the Control port (``--control``)
with its own token; the hub lets it touch only the inputs and outputs of a task the
store says is placed on it (``cortexd/artifacts/access.py``).

- **Inputs** are fetched once per node into a cache named by digest
  (``STATE_DIR/artifacts/<sha256>``, read-only), resumed from the size of its ``.part``
  after a disconnect, checked against the sha256 and renamed into place; concurrent
  tasks that need one blob share one fetch. Each task gets a copy at its path (a hard
  link would let a task that writes to its input corrupt the cache).
- **Outputs** are regular files under the task's directory, after it ends: a path that
  is missing, not a regular file, or resolves (through a symlink) outside the task's
  directory is reported with an error instead of uploaded. Each is hashed, then
  uploaded from the hub's committed offset (resumed after a disconnect), then attached
  to the task (``AttachOutputs``) before the node reports it finished.

Memory stays flat: files move in 1 MiB chunks read or written as they go.
"""

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from cortex import tls
from cortex.digests import file_sha256
from cortex.tokens import bearer
from cortex.v1 import artifacts_pb2 as apb
from cortex.v1 import artifacts_pb2_grpc
from nodeagent.config import AgentConfig
from nodeagent.errors import NodeAgentError

CHUNK_BYTES = 1 << 20
MAX_TRIES = 8
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
             grpc.StatusCode.ABORTED, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
UNARY_TIMEOUT_S = 30.0


class ArtifactFailure(NodeAgentError):
    """An input could not be fetched or placed; the task is rejected, nothing ran."""


def inside(root: Path, path: str) -> Path | None:
    """``root/path`` resolved, if it stays inside ``root`` (symlinks followed)."""
    base = root.resolve()
    target = (base / path).resolve()
    return target if target == base or base in target.parents else None


class ArtifactLink:
    def __init__(self, config: AgentConfig, token: str, log: Any) -> None:
        self.address = config.control_address
        self.cache = config.state_dir / "artifacts"
        self.log = log
        options = [("grpc.max_receive_message_length", 4 * CHUNK_BYTES),
                   ("grpc.max_send_message_length", 4 * CHUNK_BYTES)]
        if config.tls.enabled:
            self.channel = grpc.aio.secure_channel(
                self.address, tls.channel_credentials(config.tls), options)
        else:
            self.channel = grpc.aio.insecure_channel(self.address, options)
        self.stub = artifacts_pb2_grpc.ArtifactsStub(self.channel)  # type: ignore[no-untyped-call]
        self.md = bearer(token)
        self._fetches: dict[str, asyncio.Task[Path]] = {}
        self.counts = {"fetched": 0, "cache_hits": 0, "uploaded": 0, "resumes": 0}

    async def close(self) -> None:
        await self.channel.close(None)

    async def _backoff(self, e: grpc.RpcError, tries: int, what: str) -> None:
        code = e.code() if isinstance(e, grpc.aio.AioRpcError) else None
        if code not in RETRYABLE or tries >= MAX_TRIES:
            details = e.details() if isinstance(e, grpc.aio.AioRpcError) else str(e)
            raise ArtifactFailure(f"{what}: {code.name if code else 'error'}: {details}") from e
        self.counts["resumes"] += 1
        await asyncio.sleep(min(5.0, 0.2 * 2 ** tries))

    # -- inputs ----------------------------------------------------------------
    async def place_inputs(self, task_id: str, inputs: Any, workdir: Path) -> None:
        for item in inputs:
            target = inside(workdir, item.path)
            if target is None or target == workdir.resolve():
                raise ArtifactFailure(f"input path {item.path!r} leaves the task directory")
            cached = await self.fetch(task_id, item.digest.sha256, item.digest.size_bytes)
            await asyncio.to_thread(self._copy, cached, target)

    @staticmethod
    def _copy(src: Path, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.cortex-tmp")
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)

    async def fetch(self, task_id: str, sha: str, size: int) -> Path:
        path = self.cache / sha
        if path.exists():
            self.counts["cache_hits"] += 1
            return path
        running = self._fetches.get(sha)
        if running is None:
            running = asyncio.create_task(self._download(task_id, sha, size, path))
            self._fetches[sha] = running
            running.add_done_callback(lambda _: self._fetches.pop(sha, None))
        return await asyncio.shield(running)

    async def _download(self, task_id: str, sha: str, size: int, path: Path) -> Path:
        self.cache.mkdir(parents=True, exist_ok=True)
        part = path.with_name(sha + ".part")
        tries = 0
        while True:
            offset = part.stat().st_size if part.exists() else 0
            try:
                await self._read_into(task_id, sha, part, offset)
                break
            except grpc.RpcError as e:
                await self._backoff(e, tries, f"fetching input {sha[:16]}")
                tries += 1
        got, n = await asyncio.to_thread(file_sha256, part)
        if (got, n) != (sha, size):
            part.unlink()
            raise ArtifactFailure(f"input {sha[:16]}: the bytes received hash to {got[:16]} "
                                  f"({n} bytes): refused")
        os.chmod(part, 0o444)
        os.replace(part, path)
        self.counts["fetched"] += 1
        self.log.info("artifact_fetched", task=task_id, sha256=sha, size=size)
        return path

    async def _read_into(self, task_id: str, sha: str, part: Path, offset: int) -> None:
        call = self.stub.Read(apb.ReadRequest(sha256=sha, task_id=task_id, read_offset=offset),
                              metadata=self.md)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            async for msg in call:
                if msg.offset != offset:
                    raise ArtifactFailure(f"hub sent offset {msg.offset}, expected {offset}")
                await asyncio.to_thread(os.write, fd, msg.data)
                offset += len(msg.data)
        finally:
            os.close(fd)

    # -- outputs ---------------------------------------------------------------
    async def collect_outputs(self, task_id: str, attempt: int, paths: Any,
                              workdir: Path) -> list[apb.TaskOutputFile]:
        results = []
        for path in paths:
            out = apb.TaskOutputFile(path=path)
            target = inside(workdir, path)
            if target is None:
                out.error = "refused: the path leaves the task directory"
            elif not target.is_file():
                out.error = "missing" if not target.exists() else "not a regular file"
            else:
                try:
                    sha, size = await asyncio.to_thread(file_sha256, target)
                    await self.upload(task_id, target, sha, size)
                    out.digest.sha256, out.digest.size_bytes = sha, size
                except (ArtifactFailure, OSError) as e:
                    out.error = f"upload failed: {e}"
            results.append(out)
        await self._attach(task_id, attempt, results)
        return results

    async def _attach(self, task_id: str, attempt: int,
                      outputs: list[apb.TaskOutputFile]) -> None:
        tries = 0
        while True:
            try:
                await self.stub.AttachOutputs(apb.AttachOutputsRequest(
                    task_id=task_id, attempt=attempt, outputs=outputs), metadata=self.md,
                    timeout=UNARY_TIMEOUT_S)
                return
            except grpc.RpcError as e:
                await self._backoff(e, tries, f"attaching the outputs of {task_id}")
                tries += 1

    async def upload(self, task_id: str, path: Path, sha: str, size: int,
                     name: str = "") -> None:
        """Upload ``path`` for a task, or (``task_id`` empty) a blob the hub granted under
        ``name`` (a browser recording): a Write is sent even when the hub has the bytes,
        since its first message is what pins the name."""
        digest = apb.Digest(sha256=sha, size_bytes=size)
        tries, started = 0, time.monotonic()
        while True:
            try:
                status = await self.stub.QueryWriteStatus(apb.QueryWriteStatusRequest(
                    digest=digest, task_id=task_id), metadata=self.md, timeout=UNARY_TIMEOUT_S)
                if status.complete and not name:
                    return
                resp = await self.stub.Write(
                    self._chunks(task_id, path, digest, status.committed_size, name),
                    metadata=self.md)
                if resp.complete:
                    self.counts["uploaded"] += 1
                    self.log.info("artifact_uploaded", task=task_id, sha256=sha, size=size,
                                  duration_s=round(time.monotonic() - started, 3),
                                  resumed_from=status.committed_size)
                    return
            except grpc.RpcError as e:
                await self._backoff(e, tries, f"uploading {path.name}")
                tries += 1

    @staticmethod
    async def _chunks(task_id: str, path: Path, digest: apb.Digest,
                      offset: int, name: str = "") -> AsyncIterator[apb.WriteRequest]:
        fd = os.open(path, os.O_RDONLY)
        try:
            while True:
                data = await asyncio.to_thread(os.pread, fd, CHUNK_BYTES, offset)
                last = offset + len(data) >= digest.size_bytes
                yield apb.WriteRequest(digest=digest, write_offset=offset, data=data,
                                       finish_write=last, task_id=task_id, name=name)
                name = ""  # the first message names the blob
                offset += len(data)
                if last or not data:
                    return
        finally:
            os.close(fd)
