"""The hub's workspace blobs (cortexd/workspaces/blobs.py): whole, checked, and safe when
two pushes of one blob overlap (two nodes with the same new file, or a retry while the
first push still runs) — each Push call has a BlobDir of its own over one directory —
and collected (gc.py) when unused and named by no conflict."""

import asyncio
import hashlib
import os
import time
from pathlib import Path

import structlog

from cortex.wsmerge import FILE, Entry
from cortexd.store import migrate_store
from cortexd.workspaces.blobs import BlobDir
from cortexd.workspaces.gc import collect_blobs
from cortexd.workspaces.hub import WorkspaceHub
from cortexd.workspaces.records import ConflictRow, WorkspaceRecords

MIB = 1 << 20


def test_two_overlapping_pushes_of_one_blob_never_store_a_wrong_one(tmp_path: Path) -> None:
    data = os.urandom(3 * MIB)
    sha = hashlib.sha256(data).hexdigest()
    first, second = BlobDir(tmp_path), BlobDir(tmp_path)

    def piece(i: int) -> bytes:
        return data[i * MIB:(i + 1) * MIB]

    assert first.receive(sha, len(data), 0, piece(0), False) is None
    assert first.receive(sha, len(data), MIB, piece(1), False) is None
    assert second.receive(sha, len(data), 0, piece(0), False) is None  # starts meanwhile
    assert first.receive(sha, len(data), 2 * MIB, piece(2), True) is True
    assert first.path(sha).read_bytes() == data  # not cut by the second push's start
    second.close()  # the second push goes away mid-blob: nothing of it stays
    assert first.path(sha).read_bytes() == data
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [sha]


def test_a_blob_that_is_not_its_digest_keeps_nothing_and_leftovers_are_swept(
        tmp_path: Path) -> None:
    blobs = BlobDir(tmp_path)
    lie = hashlib.sha256(b"other").hexdigest()
    assert blobs.receive(lie, 5, 0, b"hello", True) is False
    assert not blobs.has(lie) and not [p for p in tmp_path.rglob("*") if p.is_file()]
    data = b"x" * 10
    sha = hashlib.sha256(data).hexdigest()
    assert blobs.receive(sha, 10, 0, data[:4], False) is None  # a kill -9 here ...
    assert [p.suffix for p in tmp_path.rglob("*") if p.is_file()] == [".part"]
    BlobDir(tmp_path).sweep()  # ... and the next hub start
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def _blob(blobs: BlobDir, data: bytes, age_s: float = 0.0) -> str:
    sha = hashlib.sha256(data).hexdigest()
    assert blobs.receive(sha, len(data), 0, data, True) is True
    if age_s:
        then = time.time() - age_s
        os.utime(blobs.path(sha), (then, then))
    return sha


def test_collect_removes_unused_blobs_no_conflict_names(tmp_path: Path) -> None:
    async def main() -> None:
        url = f"sqlite:///{tmp_path / 'c.db'}"
        await migrate_store(url)
        records = WorkspaceRecords(url)
        await records.open()
        hub = WorkspaceHub(records, tmp_path / "workspaces", structlog.get_logger())
        try:
            blobs = hub.blobs
            old = _blob(blobs, b"pushed and committed long ago", 7200)
            named = _blob(blobs, b"a conflict's node version", 7200)
            fresh = _blob(blobs, b"pushed a minute ago", 60)
            asked = _blob(blobs, b"old, but a plan just asked for it", 7200)
            assert blobs.has(asked)  # a use: its grace starts again
            await records.add_conflict(ConflictRow(
                0, "default", "w1", "n1", "f.txt", None, Entry(FILE, "0" * 64),
                Entry(FILE, named), 1, 0, ""))
            part = blobs.path(old).with_name(f"{old}.cafe.part")
            part.write_bytes(b"a push under way")
            stray = blobs.root / "README"
            stray.write_text("not a blob")
            assert await collect_blobs(hub, grace_s=3600) == (1, 29)
            assert not blobs.has(old) and all(blobs.has(s) for s in (named, fresh, asked))
            assert part.exists() and stray.exists()  # part files are the sweep's
            assert await collect_blobs(hub, grace_s=3600) == (0, 0)
            assert not blobs.has("../../../etc/passwd".ljust(64, "x"))  # never a path
        finally:
            await records.close()

    asyncio.run(main())
