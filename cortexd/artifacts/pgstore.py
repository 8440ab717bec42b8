"""The shared artifact store: rows and bytes in the cluster's PostgreSQL.

Every hub of a cluster reads and writes the same blobs, so a node may upload through
one hub and a client download through another, and an upload interrupted at one hub
resumes at any other.

**Chunk rows, not large objects.** Each chunk the client sent is one ``bytea`` row of
``artifact_chunks`` (blob_id, off), at most 1 MiB, stored out of line and uncompressed
(``STORAGE EXTERNAL``). Chosen over large objects because rows live in the store's
schema (the hubs' search_path; the tests give each run its own schema) while large
objects are database-global and outlive a dropped schema; rows are removed by a plain
``DELETE`` in the same transaction as their metadata, where a large object needs
``lo_unlink`` and leaks (``vacuumlo``) when a crash falls between; and rows are read
and written with ordinary parameterised statements through the same async pool, where
psycopg has no async large-object API. The cost: about 2 % more bytes on disk (TOAST
pages) and a row per MiB, which the (blob_id, off) key finds directly.

An upload appends its chunks under its own ``blob_id`` (``artifact_uploads``); each
append moves ``committed`` forward only if it still equals the chunk's offset, in the
chunk's transaction, so the committed offset and the rows never disagree, whichever
hub or crash came between. ``finish`` turns the upload into an ``artifact_blobs`` row
pointing at those chunks (no copy), or drops them when the blob exists already.
"""

from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from cortexd.artifacts import backend as sql
from cortexd.artifacts.backend import Partial
from cortexd.artifacts.rules import MAX_CHUNK_BYTES, ArtifactError, ArtifactRow

POOL_WAIT_S = 5.0
READ_ROWS = 4  # chunk rows fetched per query when reading (4 MiB at most)


def unavailable(e: psycopg.Error) -> ArtifactError:
    return ArtifactError("UNAVAILABLE", f"artifact store: {type(e).__name__}: {e}".strip())


class PgArtifacts:
    def __init__(self, url: str, pool_size: int = 4) -> None:
        self.url = url
        self.pool_size = pool_size
        self._pool: AsyncConnectionPool | None = None

    async def open(self) -> None:
        self._pool = AsyncConnectionPool(self.url, min_size=1, max_size=self.pool_size,
                                         kwargs={"autocommit": True}, open=False,
                                         name="cortex-artifacts", timeout=POOL_WAIT_S)
        await self._pool.open(wait=True, timeout=POOL_WAIT_S)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _fetch(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        assert self._pool is not None
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(statement, params)
                return await cur.fetchall() if cur.description else []
        except psycopg.Error as e:
            raise unavailable(e) from e

    async def _one(self, statement: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        rows = await self._fetch(statement, params)
        return rows[0] if rows else None

    # -- bytes ---------------------------------------------------------------
    async def blob_size(self, sha256: str) -> int | None:
        row = await self._one("SELECT size_bytes FROM artifact_blobs WHERE sha256 = %s",
                              (sha256,))
        return int(row[0]) if row else None

    async def committed(self, owner: str, sha256: str) -> int | None:
        row = await self._one("SELECT committed FROM artifact_uploads WHERE owner = %s AND "
                              "sha256 = %s", (owner, sha256))
        return int(row[0]) if row else None

    async def begin(self, owner: str, sha256: str, size: int, now_ms: int) -> int:
        await self._fetch("INSERT INTO artifact_uploads (owner, sha256, size_bytes, "
                          "updated_ms) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                          (owner, sha256, size, now_ms))
        return await self.committed(owner, sha256) or 0

    async def append(self, owner: str, sha256: str, offset: int, data: bytes,
                     now_ms: int) -> int:
        assert self._pool is not None
        try:
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "UPDATE artifact_uploads SET committed = committed + %s, updated_ms = %s "
                    "WHERE owner = %s AND sha256 = %s AND committed = %s RETURNING blob_id",
                    (len(data), now_ms, owner, sha256, offset))
                row = await cur.fetchone()
                if row is None:
                    raise ArtifactError("OUT_OF_RANGE", f"write_offset {offset} is not where "
                                        "the upload stands (ask QueryWriteStatus)")
                await conn.execute("INSERT INTO artifact_chunks (blob_id, off, data) "
                                   "VALUES (%s, %s, %s)", (row[0], offset, data))
        except psycopg.Error as e:
            raise unavailable(e) from e
        return offset + len(data)

    async def read_partial(self, owner: str, sha256: str) -> AsyncIterator[bytes]:
        row = await self._one("SELECT blob_id FROM artifact_uploads WHERE owner = %s AND "
                              "sha256 = %s", (owner, sha256))
        if row is None:
            raise ArtifactError("NOT_FOUND", "the upload is gone")
        async for chunk in self._chunks(int(row[0]), 0, 0):
            yield chunk

    async def finish(self, owner: str, sha256: str, size: int, now_ms: int) -> None:
        assert self._pool is not None
        try:
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "DELETE FROM artifact_uploads WHERE owner = %s AND sha256 = %s "
                    "RETURNING blob_id", (owner, sha256))
                row = await cur.fetchone()
                if row is None:
                    raise ArtifactError("NOT_FOUND", "the upload is gone")
                cur = await conn.execute(
                    "INSERT INTO artifact_blobs (sha256, blob_id, size_bytes, created_ms) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING blob_id",
                    (sha256, row[0], size, now_ms))
                if await cur.fetchone() is None:  # the blob exists: these chunks go
                    await conn.execute("DELETE FROM artifact_chunks WHERE blob_id = %s",
                                       (row[0],))
                await conn.execute(sql.UPSERT_ROW, (owner, sha256, size, now_ms, now_ms))
        except psycopg.Error as e:
            raise unavailable(e) from e

    async def discard(self, owner: str, sha256: str) -> None:
        assert self._pool is not None
        try:
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute("DELETE FROM artifact_uploads WHERE owner = %s AND "
                                         "sha256 = %s RETURNING blob_id", (owner, sha256))
                if (row := await cur.fetchone()) is not None:
                    await conn.execute("DELETE FROM artifact_chunks WHERE blob_id = %s",
                                       (row[0],))
        except psycopg.Error as e:
            raise unavailable(e) from e

    async def read(self, sha256: str, offset: int, limit: int) -> AsyncIterator[bytes]:
        row = await self._one("SELECT blob_id FROM artifact_blobs WHERE sha256 = %s",
                              (sha256,))
        if row is None:
            raise ArtifactError("NOT_FOUND", "the blob is gone")
        async for chunk in self._chunks(int(row[0]), offset, limit):
            yield chunk

    async def _chunks(self, blob_id: int, offset: int, limit: int) -> AsyncIterator[bytes]:
        end = offset + limit if limit else None
        while end is None or offset < end:
            # The chunk holding `offset` starts at most one chunk before it.
            rows = await self._fetch(
                "SELECT off, data FROM artifact_chunks WHERE blob_id = %s AND off > %s "
                "AND off + octet_length(data) > %s ORDER BY off LIMIT %s",
                (blob_id, offset - MAX_CHUNK_BYTES - 1, offset, READ_ROWS))
            if not rows:
                return
            for off, data in rows:
                piece = bytes(data)[offset - int(off):]
                if end is not None:
                    piece = piece[:end - offset]
                if not piece:
                    return
                offset += len(piece)
                yield piece

    async def partials(self) -> list[Partial]:
        rows = await self._fetch("SELECT owner, sha256, size_bytes, committed, updated_ms "
                                 "FROM artifact_uploads")
        return [Partial(str(o), str(s), int(n), int(c), int(u)) for o, s, n, c, u in rows]

    async def blobs(self) -> list[tuple[str, int]]:
        rows = await self._fetch("SELECT sha256, size_bytes FROM artifact_blobs")
        return [(str(s), int(n)) for s, n in rows]

    async def delete_blob(self, sha256: str) -> None:
        assert self._pool is not None
        try:
            async with self._pool.connection() as conn, conn.transaction():
                cur = await conn.execute("DELETE FROM artifact_blobs WHERE sha256 = %s "
                                         "RETURNING blob_id", (sha256,))
                if (row := await cur.fetchone()) is not None:
                    await conn.execute("DELETE FROM artifact_chunks WHERE blob_id = %s",
                                       (row[0],))
        except psycopg.Error as e:
            raise unavailable(e) from e

    # -- rows ----------------------------------------------------------------
    async def get(self, owner: str, sha256: str) -> ArtifactRow | None:
        found = sql.rows_from(await self._fetch(sql.SELECT_ROW, (owner, sha256)))
        return found[0] if found else None

    async def resolve(self, owner: str, ref: str) -> str | None:
        row = await self._one(sql.RESOLVE, (owner, ref))
        return str(row[0]) if row else None

    async def add_refs(self, owner: str, sha256: str, refs: list[tuple[str, int]],
                       now_ms: int) -> None:
        assert self._pool is not None
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute(sql.TOUCH_ROW, (now_ms, owner, sha256))
                async with conn.cursor() as cur:
                    await cur.executemany(sql.UPSERT_REF, [(owner, ref, sha256, now_ms, exp)
                                                           for ref, exp in refs])
        except psycopg.Error as e:
            raise unavailable(e) from e

    async def list_rows(self, owner: str, limit: int) -> list[ArtifactRow]:
        return sql.rows_from(await self._fetch(sql.SELECT_LIST, (owner, limit)))

    async def all_rows(self) -> list[ArtifactRow]:
        return sql.rows_from(await self._fetch(sql.SELECT_ALL))

    async def remove_refs(self, owner: str, sha256: str = "", ref: str = "") -> int:
        assert self._pool is not None
        statement, key = (sql.DELETE_REFS_OF, sha256) if sha256 else (sql.DELETE_REF, ref)
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(statement, (owner, key))
                return int(cur.rowcount)
        except psycopg.Error as e:
            raise unavailable(e) from e

    async def task_refs(self, owner: str, task_id: str) -> list[tuple[str, str, int]]:
        lo, hi = sql.task_ref_range(task_id)
        rows = await self._fetch(sql.TASK_REFS, (owner, lo, hi))
        return [(str(r), str(s), int(n)) for r, s, n in rows]

    async def drop(self, refs: list[tuple[str, str]], rows: list[tuple[str, str]]) -> None:
        assert self._pool is not None
        try:
            async with self._pool.connection() as conn, conn.transaction():
                async with conn.cursor() as cur:
                    if refs:
                        await cur.executemany(sql.DELETE_REF, refs)
                    if rows:
                        await cur.executemany(sql.DELETE_ROW, rows)
        except psycopg.Error as e:
            raise unavailable(e) from e
