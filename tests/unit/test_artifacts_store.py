"""The artifact store contract, for real, on both backends (directory + SQLite rows, and
PostgreSQL chunk rows): partial uploads that resume, atomic finish, dedup, owners."""

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from cortexd.artifacts.backend import ArtifactStore
from cortexd.artifacts.localstore import LocalArtifacts
from cortexd.artifacts.pgstore import PgArtifacts
from cortexd.artifacts.rules import ArtifactError
from cortexd.store import open_store
from tests.pg import pg_schema

Body = Callable[[ArtifactStore], Awaitable[None]]


@pytest.fixture(params=["local", "postgresql"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], ArtifactStore]]:
    if request.param == "local":
        db = tmp_path / "c.db"
        yield lambda: LocalArtifacts(tmp_path / "artifacts", db)
        return
    with pg_schema() as url:
        yield lambda: PgArtifacts(url)


def run(make: Callable[[], ArtifactStore], body: Body) -> None:
    async def main() -> None:
        probe = make()
        url = (f"sqlite:///{probe.db_path}" if isinstance(probe, LocalArtifacts)
               else probe.url)  # type: ignore[attr-defined]
        tasks = open_store(url)
        await tasks.open()  # migrates: the artifact tables come with migration 0006
        store = make()
        await store.open()
        try:
            await body(store)
        finally:
            await store.close()
            await tasks.close()
    asyncio.run(main())


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in chunks])


DATA = os.urandom(3 * 1024 * 1024 + 17)
SHA = hashlib.sha256(DATA).hexdigest()


async def upload(store: ArtifactStore, owner: str, data: bytes, sha: str, step: int) -> None:
    at = await store.begin(owner, sha, len(data), 1)
    while at < len(data):
        at = await store.append(owner, sha, at, data[at:at + step], 2)
    await store.finish(owner, sha, len(data), 3)


def test_a_partial_resumes_from_its_committed_size(make) -> None:  # type: ignore[no-untyped-def]
    async def body(store: ArtifactStore) -> None:
        assert await store.committed("t", SHA) is None
        assert await store.begin("t", SHA, len(DATA), 1) == 0
        assert await store.append("t", SHA, 0, DATA[:1 << 20], 2) == 1 << 20
        # A second begin (the client reconnected) finds what was committed.
        assert await store.begin("t", SHA, len(DATA), 3) == 1 << 20
        with pytest.raises(ArtifactError) as e:
            await store.append("t", SHA, 5, b"x", 4)  # not at the committed offset
        assert e.value.code == "OUT_OF_RANGE"
        assert await store.committed("t", SHA) == 1 << 20
        assert await collect(store.read_partial("t", SHA)) == DATA[:1 << 20]
        assert await store.blob_size(SHA) is None  # nothing readable before finish
        at = 1 << 20
        while at < len(DATA):
            at = await store.append("t", SHA, at, DATA[at:at + 1_000_000], 5)
        await store.finish("t", SHA, len(DATA), 6)
        assert await store.committed("t", SHA) is None
        assert await store.blob_size(SHA) == len(DATA)
        assert await collect(store.read(SHA, 0, 0)) == DATA
        assert await collect(store.read(SHA, 1_500_000, 100)) == DATA[1_500_000:1_500_100]
        assert await collect(store.read(SHA, len(DATA) - 3, 0)) == DATA[-3:]
        row = await store.get("t", SHA)
        assert row is not None and row.size_bytes == len(DATA)
        assert await store.get("other", SHA) is None  # owners see only their own rows
    run(make, body)


def test_a_second_owner_dedups_onto_the_same_blob_and_discard_keeps_nothing(make) -> None:  # type: ignore[no-untyped-def]
    async def body(store: ArtifactStore) -> None:
        await upload(store, "a", DATA, SHA, 1 << 20)
        await upload(store, "b", DATA, SHA, 777_777)
        assert await store.blobs() == [(SHA, len(DATA))]
        assert await store.get("b", SHA) is not None
        assert await collect(store.read(SHA, 0, 0)) == DATA
        other = hashlib.sha256(b"zz").hexdigest()
        await store.begin("a", other, 2, 1)
        await store.append("a", other, 0, b"z", 1)
        assert [p.sha256 for p in await store.partials()] == [other]
        await store.discard("a", other)
        assert await store.partials() == [] and await store.committed("a", other) is None
    run(make, body)


def test_references_names_and_task_refs(make) -> None:  # type: ignore[no-untyped-def]
    async def body(store: ArtifactStore) -> None:
        await upload(store, "a", DATA, SHA, 1 << 20)
        small = b"hello"
        sha2 = hashlib.sha256(small).hexdigest()
        await upload(store, "a", small, sha2, 1 << 20)
        await store.add_refs("a", SHA, [("name:big", 0), ("task:t-1:in:x", 99)], 10)
        await store.add_refs("a", sha2, [("task:t-1:out:y", 99), ("task:t-10:out:z", 99)], 11)
        assert await store.resolve("a", "name:big") == SHA
        assert await store.resolve("b", "name:big") is None
        assert await store.task_refs("a", "t-1") == [("task:t-1:in:x", SHA, len(DATA)),
                                                    ("task:t-1:out:y", sha2, 5)]
        rows = {r.sha256: r for r in await store.list_rows("a", 10)}
        assert [ref for ref, _, _ in rows[SHA].refs] == ["name:big", "task:t-1:in:x"]
        assert rows[sha2].last_used_ms == 11
        # A name moves to another blob (a tag), never to two.
        await store.add_refs("a", sha2, [("name:big", 0)], 12)
        assert await store.resolve("a", "name:big") == sha2
        assert await store.remove_refs("a", ref="name:big") == 1
        assert await store.remove_refs("a", sha256=sha2) == 2
        await store.drop([("a", "task:t-1:in:x")], [("a", sha2)])
        assert await store.get("a", sha2) is None
        assert [r.sha256 for r in await store.all_rows()] == [SHA]
        await store.delete_blob(sha2)
        assert await store.blob_size(sha2) is None
    run(make, body)
