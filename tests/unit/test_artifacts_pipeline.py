"""The Write pipeline: chunks appended in order while the stream receives, bounded, and a
failed append ending the upload with nothing after it kept — alone, and through the real
service on the real directory store."""

import asyncio
import hashlib
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cortex.tokens import Principal
from cortex.v1 import artifacts_pb2 as pb
from cortexd.artifacts.localstore import LocalArtifacts
from cortexd.artifacts.pgstore import PgArtifacts
from cortexd.artifacts.pipeline import AppendPipeline
from cortexd.artifacts.rules import ArtifactError, Retention
from cortexd.artifacts.service import ArtifactsService
from cortexd.artifacts.uploads import Uploads
from cortexd.store import open_store
from tests.pg import pg_schema

MiB = 1 << 20


def test_chunks_are_appended_in_order_and_the_queue_is_bounded() -> None:
    appended: list[int] = []
    queued = 0
    most = 0

    async def append(offset: int, data: bytes) -> int:
        nonlocal queued
        await asyncio.sleep(random.random() / 1000)  # the disk takes its time
        appended.append(offset)
        queued -= 1
        return offset + len(data)

    async def main() -> int:
        nonlocal queued, most
        pipe = AppendPipeline(append, 0, depth=3)
        for i in range(40):
            queued += 1
            await pipe.put(i * 10, b"x" * 10)
            most = max(most, queued)
        return await pipe.close()

    assert asyncio.run(main()) == 400
    assert appended == [i * 10 for i in range(40)]
    assert most <= 3 + 2  # the queue, the chunk being appended, the one being put


def test_a_failed_append_ends_the_pipeline_and_nothing_after_it_is_appended() -> None:
    appended: list[int] = []

    async def append(offset: int, data: bytes) -> int:
        await asyncio.sleep(0)
        if offset == 30:
            raise OSError(28, "No space left on device")
        appended.append(offset)
        return offset + len(data)

    async def main() -> AppendPipeline:
        pipe = AppendPipeline(append, 0, depth=2)
        with pytest.raises(OSError, match="No space"):
            for i in range(100):
                await pipe.put(i * 10, b"y" * 10)
        with pytest.raises(OSError):
            await pipe.close()
        await pipe.stop()
        return pipe

    pipe = asyncio.run(main())
    assert appended == [0, 10, 20] and pipe.committed == 30


def test_stop_appends_nothing_queued_but_waits_for_the_chunk_in_progress() -> None:
    appended: list[int] = []

    async def main() -> None:
        going = asyncio.Event()

        async def append(offset: int, data: bytes) -> int:
            going.set()
            await asyncio.sleep(0.01)
            appended.append(offset)
            return offset + len(data)

        pipe = AppendPipeline(append, 0, depth=4)
        for i in range(4):
            await pipe.put(i, b"z")
        await going.wait()
        await pipe.stop()
        assert appended == [0] and pipe.committed == 1

    asyncio.run(main())


class FailingStore(LocalArtifacts):
    """The real directory store whose disk fills up at one offset."""

    fail_at = 3 * MiB
    appended: list[int]

    async def append(self, owner: str, sha256: str, offset: int, data: bytes,
                     now_ms: int) -> int:
        if offset == self.fail_at:
            raise OSError(28, "No space left on device")
        self.appended.append(offset)
        return await super().append(owner, sha256, offset, data, now_ms)


def test_a_write_error_mid_upload_fails_it_and_nothing_is_kept(tmp_path: Path) -> None:
    data = os.urandom(8 * MiB)
    sha = hashlib.sha256(data).hexdigest()
    digest = pb.Digest(sha256=sha, size_bytes=len(data))

    async def requests() -> AsyncIterator[pb.WriteRequest]:
        for at in range(0, len(data), MiB):
            yield pb.WriteRequest(digest=digest, write_offset=at, data=data[at:at + MiB],
                                  finish_write=at + MiB == len(data))

    async def main() -> None:
        db = tmp_path / "c.db"
        tasks = open_store(f"sqlite:///{db}")
        await tasks.open()
        store = FailingStore(tmp_path / "artifacts", db)
        store.appended = []
        await store.open()
        uploads = Uploads(4, 1 << 40)
        service = ArtifactsService(store, tasks, None,  # type: ignore[arg-type]
                                   max_bytes=1 << 40, idle_timeout_s=10, uploads=uploads,
                                   retention=Retention(60, 60, 60))
        admin = Principal("admin", "admin")
        try:
            with pytest.raises(OSError, match="No space"):
                await service._write(admin, requests())
            # Only the chunks before the failed one were written; nothing after it.
            assert store.appended == [0, MiB, 2 * MiB]
            assert await store.committed("default", sha) == 3 * MiB
            assert await store.get("default", sha) is None and await store.blobs() == []
            assert uploads.partial_bytes == 3 * MiB and not uploads.is_live(("default", sha))
            # The upload resumes from there, the hash rebuilt from the committed bytes.
            store.fail_at = -1
            resp = await service._write(admin, (m async for m in requests()
                                                 if m.write_offset >= 3 * MiB))
            assert resp.complete and await store.blobs() == [(sha, len(data))]
            # A refused chunk says what is committed, not what was queued.
            with pytest.raises(ArtifactError, match=f"committed {MiB} bytes"):
                other = pb.Digest(sha256="0" * 64, size_bytes=4 * MiB)
                await service._write(admin, _two(other))
        finally:
            await store.close()
            await tasks.close()

    asyncio.run(main())


async def _two(digest: pb.Digest) -> AsyncIterator[pb.WriteRequest]:
    yield pb.WriteRequest(digest=digest, write_offset=0, data=b"a" * MiB)
    yield pb.WriteRequest(digest=digest, write_offset=2 * MiB, data=b"b")


def test_the_pipelined_write_on_the_shared_backend_resumes_and_checks() -> None:
    data = os.urandom(5 * MiB + 3)
    sha = hashlib.sha256(data).hexdigest()
    digest = pb.Digest(sha256=sha, size_bytes=len(data))

    async def requests(start: int, stop: int) -> AsyncIterator[pb.WriteRequest]:
        for at in range(start, stop, MiB):
            yield pb.WriteRequest(digest=digest, write_offset=at, data=data[at:at + MiB],
                                  finish_write=at + MiB >= len(data))

    async def main(url: str) -> None:
        tasks = open_store(url)
        await tasks.open()
        store = PgArtifacts(url)
        await store.open()
        service = ArtifactsService(store, tasks, None,  # type: ignore[arg-type]
                                   max_bytes=1 << 40, idle_timeout_s=10,
                                   uploads=Uploads(4, 1 << 40),
                                   retention=Retention(60, 60, 60))
        admin = Principal("admin", "admin")
        try:
            resp = await service._write(admin, requests(0, 2 * MiB))
            assert (resp.committed_size, resp.complete) == (2 * MiB, False)
            resp = await service._write(admin, requests(2 * MiB, len(data)))
            assert resp.complete
            assert b"".join([c async for c in store.read(sha, 0, 0)]) == data
        finally:
            await store.close()
            await tasks.close()

    with pg_schema() as url:
        asyncio.run(main(url))
