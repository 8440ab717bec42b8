"""The embedded artifact store: a content-addressed directory, rows in the hub's SQLite.

Layout under ``root`` (``artifact_dir``, default ``STATE_DIR/artifacts``)::

    blobs/ab/abcdef…      a whole, checked blob, named by its sha256 (read-only, 0444)
    partial/OWNER/abcdef… an upload in progress; its size is the committed offset

Why the committed offset is the partial file's size: chunks are appended in order with
``pwrite`` at the committed offset, so after a crash of the hub (kill -9) the file holds
exactly the bytes that were written, a prefix of the blob, and the upload resumes from
its end. A power loss could leave a torn tail; the sha256 check at ``finish`` refuses
such a blob and keeps nothing, so the client uploads again. ``finish`` fsyncs the file,
renames it into ``blobs/`` (atomic: a reader never sees half a blob) and fsyncs the
directory.

The rows (``artifacts``, ``artifact_refs``, migration 0006) are in the hub's SQLite
database, which the store migrated at open; this class keeps its own connection on its
own thread (WAL allows a second connection), file I/O on a second thread.
"""

import asyncio
import hashlib
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from cortexd.artifacts import backend as sql
from cortexd.artifacts.backend import Partial
from cortexd.artifacts.rules import CHUNK_BYTES, ArtifactError, ArtifactRow

T = TypeVar("T")


def _q(statement: str) -> str:
    return statement.replace("%s", "?")


class LocalArtifacts:
    def __init__(self, root: Path, db_path: Path) -> None:
        self.root = root
        self.db_path = db_path
        self._db_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="artifact-db")
        self._io_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="artifact-io")
        self._db: sqlite3.Connection | None = None

    async def _sql(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            assert self._db is not None
            with self._db:  # one transaction
                return fn(self._db)
        return await asyncio.get_running_loop().run_in_executor(self._db_pool, run)

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io_pool, fn, *args)

    async def open(self) -> None:
        def connect() -> None:
            db = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA busy_timeout = 10000")
            db.isolation_level = "DEFERRED"
            self._db = db
        for sub in ("blobs", "partial"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        await asyncio.get_running_loop().run_in_executor(self._db_pool, connect)

    async def close(self) -> None:
        if self._db is not None:
            await asyncio.get_running_loop().run_in_executor(self._db_pool, self._db.close)
            self._db = None
        self._db_pool.shutdown()
        self._io_pool.shutdown()

    # -- paths ---------------------------------------------------------------
    def _blob(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256[:2] / sha256

    def _partial(self, owner: str, sha256: str) -> Path:
        return self.root / "partial" / owner / sha256

    # -- bytes ---------------------------------------------------------------
    async def blob_size(self, sha256: str) -> int | None:
        try:
            return (await self._io(os.stat, self._blob(sha256))).st_size
        except FileNotFoundError:
            return None

    async def committed(self, owner: str, sha256: str) -> int | None:
        try:
            return (await self._io(os.stat, self._partial(owner, sha256))).st_size
        except FileNotFoundError:
            return None

    async def begin(self, owner: str, sha256: str, size: int, now_ms: int) -> int:
        path = self._partial(owner, sha256)

        def create() -> int:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                return os.fstat(fd).st_size
            finally:
                os.close(fd)
        return await self._io(create)

    async def append(self, owner: str, sha256: str, offset: int, data: bytes,
                     now_ms: int) -> int:
        path = self._partial(owner, sha256)

        def write(at: int) -> int:
            try:
                fd = os.open(path, os.O_WRONLY)
            except FileNotFoundError:
                raise ArtifactError("NOT_FOUND", "the upload is gone (collected or "
                                    "discarded); start it again") from None
            try:
                end = os.fstat(fd).st_size
                if end != at:
                    raise ArtifactError("OUT_OF_RANGE", f"write_offset {at} is not "
                                        f"where the upload stands ({end})")
                view = memoryview(data)
                while view:
                    n = os.pwrite(fd, view, at)
                    at, view = at + n, view[n:]
                return at
            finally:
                os.close(fd)
        return await self._io(write, offset)

    async def read_partial(self, owner: str, sha256: str) -> AsyncIterator[bytes]:
        async for chunk in self._read_file(self._partial(owner, sha256), 0, 0):
            yield chunk

    async def finish(self, owner: str, sha256: str, size: int, now_ms: int) -> None:
        part, blob = self._partial(owner, sha256), self._blob(sha256)

        def place() -> None:
            if blob.exists():
                part.unlink(missing_ok=True)
                return
            fd = os.open(part, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(part, 0o444)
            blob.parent.mkdir(exist_ok=True)
            os.replace(part, blob)
            dfd = os.open(blob.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        await self._io(place)
        await self._sql(lambda db: db.execute(_q(sql.UPSERT_ROW),
                                              (owner, sha256, size, now_ms, now_ms)))

    async def discard(self, owner: str, sha256: str) -> None:
        await self._io(self._partial(owner, sha256).unlink, True)

    async def read(self, sha256: str, offset: int, limit: int) -> AsyncIterator[bytes]:
        async for chunk in self._read_file(self._blob(sha256), offset, limit):
            yield chunk

    async def _read_file(self, path: Path, offset: int, limit: int) -> AsyncIterator[bytes]:
        try:
            fd = await self._io(os.open, path, os.O_RDONLY)
        except FileNotFoundError:
            raise ArtifactError("NOT_FOUND", "the blob is gone") from None
        try:
            left = limit or -1
            while left:
                want = CHUNK_BYTES if left < 0 else min(CHUNK_BYTES, left)
                data = await self._io(os.pread, fd, want, offset)
                if not data:
                    return
                offset += len(data)
                left = left - len(data) if left > 0 else left
                yield data
        finally:
            os.close(fd)

    async def partials(self) -> list[Partial]:
        def scan() -> list[Partial]:
            out = []
            for owner_dir in (self.root / "partial").iterdir():
                for f in owner_dir.iterdir():
                    st = f.stat()
                    out.append(Partial(owner_dir.name, f.name, 0, st.st_size,
                                       int(st.st_mtime * 1000)))
            return out
        return await self._io(scan)

    async def blobs(self) -> list[tuple[str, int]]:
        def scan() -> list[tuple[str, int]]:
            return [(f.name, f.stat().st_size) for d in (self.root / "blobs").iterdir()
                    for f in d.iterdir()]
        return await self._io(scan)

    async def delete_blob(self, sha256: str) -> None:
        await self._io(self._blob(sha256).unlink, True)

    # -- rows ----------------------------------------------------------------
    async def get(self, owner: str, sha256: str) -> ArtifactRow | None:
        rows = await self._sql(lambda db: db.execute(_q(sql.SELECT_ROW),
                                                     (owner, sha256)).fetchall())
        found = sql.rows_from(rows)
        return found[0] if found else None

    async def resolve(self, owner: str, ref: str) -> str | None:
        row = await self._sql(lambda db: db.execute(_q(sql.RESOLVE), (owner, ref)).fetchone())
        return str(row[0]) if row else None

    async def add_refs(self, owner: str, sha256: str, refs: list[tuple[str, int]],
                       now_ms: int) -> None:
        def add(db: sqlite3.Connection) -> None:
            db.execute(_q(sql.TOUCH_ROW), (now_ms, owner, sha256))
            db.executemany(_q(sql.UPSERT_REF),
                           [(owner, ref, sha256, now_ms, exp) for ref, exp in refs])
        await self._sql(add)

    async def list_rows(self, owner: str, limit: int) -> list[ArtifactRow]:
        rows = await self._sql(lambda db: db.execute(_q(sql.SELECT_LIST),
                                                     (owner, limit)).fetchall())
        return sql.rows_from(rows)

    async def all_rows(self) -> list[ArtifactRow]:
        return sql.rows_from(await self._sql(lambda db: db.execute(sql.SELECT_ALL).fetchall()))

    async def remove_refs(self, owner: str, sha256: str = "", ref: str = "") -> int:
        if sha256:
            return await self._sql(lambda db: db.execute(_q(sql.DELETE_REFS_OF),
                                                         (owner, sha256)).rowcount)
        return await self._sql(lambda db: db.execute(_q(sql.DELETE_REF), (owner, ref)).rowcount)

    async def task_refs(self, owner: str, task_id: str) -> list[tuple[str, str, int]]:
        lo, hi = sql.task_ref_range(task_id)
        rows = await self._sql(lambda db: db.execute(_q(sql.TASK_REFS),
                                                     (owner, lo, hi)).fetchall())
        return [(str(r), str(s), int(n)) for r, s, n in rows]

    async def drop(self, refs: list[tuple[str, str]], rows: list[tuple[str, str]]) -> None:
        def run(db: sqlite3.Connection) -> None:
            db.executemany(_q(sql.DELETE_REF), refs)
            db.executemany(_q(sql.DELETE_ROW), rows)
        await self._sql(run)


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in chunks (flat memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()
