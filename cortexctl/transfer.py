"""Moving artifacts between this machine and the hub (``cortex.v1.Artifacts``), resumably.

An upload asks the hub what it has committed (QueryWriteStatus) and streams the rest
of the file from there in 1 MiB chunks read as they are sent, so memory stays flat
whatever the size; after a disconnect (hub restart, network) it asks again and goes
on from the hub's offset, up to ``MAX_RESUMES`` times with a capped backoff. A blob
the hub has is not sent at all. A download writes ``DEST.part``, resumes from its size,
checks the sha256 and renames it into place.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

from cortex.tokens import bearer
from cortex.v1 import artifacts_pb2 as apb
from cortex.v1 import artifacts_pb2_grpc
from cortexctl.client import HubSettings, open_channel
from cortexctl.errors import CtlError, from_rpc

CHUNK_BYTES = 1 << 20
MAX_RESUMES = 20
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
             grpc.StatusCode.ABORTED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
             grpc.StatusCode.CANCELLED}
Progress = Callable[[int], None]  # called with the bytes that moved since the last call


def _code(e: grpc.RpcError) -> grpc.StatusCode | None:
    return e.code() if isinstance(e, grpc.Call) else None


class ArtifactClient:
    def __init__(self, settings: HubSettings, channel: grpc.Channel | None = None) -> None:
        self.settings = settings
        self._channel = channel if channel is not None else open_channel(settings)
        self._md = bearer(settings.token)
        self.stub = artifacts_pb2_grpc.ArtifactsStub(self._channel)  # type: ignore[no-untyped-call]
        self.resumes = 0  # how many times a transfer went on after a failure
        self.resumed_from: list[int] = []  # the hub's committed offset at each resume

    def __enter__(self) -> ArtifactClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._channel.close()

    def _unary(self, method: Callable[..., object], request: object, subject: str = "") -> object:
        try:
            return method(request, timeout=self.settings.timeout_s, metadata=self._md)
        except grpc.RpcError as e:
            raise from_rpc(e, self.settings.address, subject) from e

    def _retry(self, e: grpc.RpcError, tries: int, what: str) -> None:
        if _code(e) not in RETRYABLE or tries >= MAX_RESUMES:
            raise from_rpc(e, self.settings.address, what) from e
        self.resumes += 1
        time.sleep(min(2.0, 0.1 * 2 ** tries))

    # -- upload ----------------------------------------------------------------
    def status(self, sha: str, size: int) -> apb.QueryWriteStatusResponse:
        req = apb.QueryWriteStatusRequest(digest=apb.Digest(sha256=sha, size_bytes=size))
        resp = self._unary(self.stub.QueryWriteStatus, req)
        assert isinstance(resp, apb.QueryWriteStatusResponse)
        return resp

    def upload(self, path: Path, sha: str, size: int, name: str = "",
               progress: Progress | None = None) -> bool:
        """Upload ``path`` (already hashed); False if the hub had it (nothing sent)."""
        digest = apb.Digest(sha256=sha, size_bytes=size)
        sent_any, tries = False, 0
        while True:
            try:
                status = self.stub.QueryWriteStatus(
                    apb.QueryWriteStatusRequest(digest=digest),
                    timeout=self.settings.timeout_s, metadata=self._md)
                if status.complete and not name:
                    return sent_any
                offset = status.committed_size if not status.complete else size
                if tries:
                    self.resumed_from.append(offset)
                if progress and offset:
                    progress(offset)
                resp = self.stub.Write(self._chunks(path, digest, offset, name, progress),
                                       metadata=self._md)
                sent_any = sent_any or offset < size
                if resp.complete:
                    return sent_any
            except grpc.RpcError as e:
                self._retry(e, tries, f"upload of {path}")
                tries += 1
                if progress:
                    progress(-1)  # restart the count: the hub says where we stand

    @staticmethod
    def _chunks(path: Path, digest: apb.Digest, offset: int, name: str,
                progress: Progress | None) -> Iterator[apb.WriteRequest]:
        with open(path, "rb") as f:
            f.seek(offset)
            while True:
                data = f.read(CHUNK_BYTES)
                last = offset + len(data) >= digest.size_bytes
                yield apb.WriteRequest(digest=digest, write_offset=offset, data=data,
                                       finish_write=last, name=name)
                offset += len(data)
                if progress:
                    progress(len(data))
                if last:
                    return
                if not data:
                    raise CtlError(f"{path} got shorter while it was uploaded")

    # -- download --------------------------------------------------------------
    def download(self, sha: str, name: str, dest: Path,
                 progress: Progress | None = None) -> tuple[str, int]:
        """Write the artifact to ``dest`` (checked as it arrives); (sha256, size)."""
        part = dest.with_name(dest.name + ".part")
        hasher, tries = hashlib.sha256(), 0
        if part.exists():  # an earlier get stopped: its bytes are a prefix
            with open(part, "rb") as f:
                while chunk := f.read(CHUNK_BYTES):
                    hasher.update(chunk)
        while True:
            offset = part.stat().st_size if part.exists() else 0
            if progress and offset:
                progress(offset)
            try:
                size, got_sha = self._read_into(sha, name, part, offset, hasher, progress)
                break
            except grpc.RpcError as e:
                self._retry(e, tries, f"artifact {sha or name}")
                tries += 1
                if progress:
                    progress(-1)
        actual, n = hasher.hexdigest(), part.stat().st_size
        if actual != got_sha or n != size:
            part.unlink()
            raise CtlError(f"downloaded bytes hash to {actual}, not {got_sha}: removed")
        os.replace(part, dest)
        return got_sha, size

    def _read_into(self, sha: str, name: str, part: Path, offset: int, hasher: Any,
                   progress: Progress | None) -> tuple[int, str]:
        stream = self.stub.Read(apb.ReadRequest(sha256=sha, name=name, read_offset=offset),
                                metadata=self._md)
        size, got = 0, sha
        with open(part, "ab") as f:
            for msg in stream:
                if msg.sha256:
                    size, got = msg.size_bytes, msg.sha256
                if msg.offset != offset:
                    raise CtlError(f"the hub sent offset {msg.offset}, expected {offset}")
                f.write(msg.data)
                hasher.update(msg.data)
                offset += len(msg.data)
                if progress:
                    progress(len(msg.data))
        return size, got

    # -- the rest --------------------------------------------------------------
    def stat(self, sha: str = "", name: str = "") -> apb.ArtifactInfo:
        resp = self._unary(self.stub.Stat, apb.StatRequest(sha256=sha, name=name),
                           f"artifact {sha or name}")
        assert isinstance(resp, apb.ArtifactInfo)
        return resp

    def list(self, limit: int = 0) -> list[apb.ArtifactInfo]:
        resp = self._unary(self.stub.List, apb.ListArtifactsRequest(limit=limit))
        assert isinstance(resp, apb.ListArtifactsResponse)
        return list(resp.artifacts)

    def remove(self, sha: str = "", name: str = "") -> int:
        resp = self._unary(self.stub.Remove, apb.RemoveArtifactRequest(sha256=sha, name=name),
                           f"artifact {sha or name}")
        assert isinstance(resp, apb.RemoveArtifactResponse)
        return resp.refs_removed

    def collect(self, dry_run: bool = False) -> apb.CollectResponse:
        resp = self._unary(self.stub.Collect, apb.CollectRequest(dry_run=dry_run))
        assert isinstance(resp, apb.CollectResponse)
        return resp
