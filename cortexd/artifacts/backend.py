"""The artifact store interface, and the SQL both of its backends share.

Two real backends implement :class:`ArtifactStore`: ``localstore.LocalArtifacts``
(the embedded default: blobs are files in a content-addressed directory, the rows in
the hub's SQLite database) and ``pgstore.PgArtifacts`` (shared by the hubs of one
cluster: rows and the bytes, as chunk rows, in PostgreSQL). Which one a hub uses
follows its store (``open_artifacts``).

The contract (the same test suite runs against both, ``tests/unit/test_artifacts_store``):

- A **partial upload** is keyed by (owner, sha256): a client that crashed resumes it by
  naming the same blob, no upload id to remember. Its committed size only grows, by
  whole appended chunks, and survives a hub crash; it is what ``QueryWriteStatus`` says.
- ``finish`` makes a checked partial a blob (atomically: a reader never sees a blob
  that is not whole) and records the owner's artifact row; if the blob exists already
  (another owner, or a race) the partial is just dropped. ``discard`` keeps nothing.
- Rows: one per (owner, sha256); references (owner, ref) -> sha256 with an optional
  expiry. An owner sees only its own rows, whatever blobs exist.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from cortexd.artifacts.rules import ArtifactRow


@dataclass(frozen=True, slots=True)
class Partial:
    owner: str
    sha256: str
    size_bytes: int
    committed: int
    updated_ms: int


class ArtifactStore(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...

    # -- bytes ---------------------------------------------------------------
    async def blob_size(self, sha256: str) -> int | None: ...
    async def begin(self, owner: str, sha256: str, size: int, now_ms: int) -> int:
        """The partial's committed size, creating it empty when there is none."""
        ...
    async def committed(self, owner: str, sha256: str) -> int | None: ...
    async def append(self, owner: str, sha256: str, offset: int, data: bytes,
                     now_ms: int) -> int:
        """Append at ``offset`` (== committed, else ArtifactError); the new committed."""
        ...
    def read_partial(self, owner: str, sha256: str) -> AsyncIterator[bytes]: ...
    async def finish(self, owner: str, sha256: str, size: int, now_ms: int) -> None: ...
    async def discard(self, owner: str, sha256: str) -> None: ...
    def read(self, sha256: str, offset: int, limit: int) -> AsyncIterator[bytes]: ...
    async def partials(self) -> list[Partial]: ...
    async def blobs(self) -> list[tuple[str, int]]: ...
    async def delete_blob(self, sha256: str) -> None: ...

    # -- rows ----------------------------------------------------------------
    async def get(self, owner: str, sha256: str) -> ArtifactRow | None: ...
    async def resolve(self, owner: str, ref: str) -> str | None: ...
    async def add_refs(self, owner: str, sha256: str, refs: list[tuple[str, int]],
                       now_ms: int) -> None:
        """Point (ref, expires_ms) at an artifact the owner has; touches its row."""
        ...
    async def list_rows(self, owner: str, limit: int) -> list[ArtifactRow]: ...
    async def all_rows(self) -> list[ArtifactRow]: ...
    async def remove_refs(self, owner: str, sha256: str = "", ref: str = "") -> int: ...
    async def task_refs(self, owner: str, task_id: str) -> list[tuple[str, str, int]]:
        """(ref, sha256, size) of the task's references."""
        ...
    async def drop(self, refs: list[tuple[str, str]], rows: list[tuple[str, str]]) -> None:
        """Delete these (owner, ref) references and (owner, sha256) rows."""
        ...


# The row SQL, written once with %s placeholders (the SQLite backend swaps in ?).
UPSERT_ROW = ("INSERT INTO artifacts (owner, sha256, size_bytes, created_ms, last_used_ms) "
              "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (owner, sha256) DO UPDATE SET "
              "last_used_ms = excluded.last_used_ms")
TOUCH_ROW = "UPDATE artifacts SET last_used_ms = %s WHERE owner = %s AND sha256 = %s"
UPSERT_REF = ("INSERT INTO artifact_refs (owner, ref, sha256, created_ms, expires_ms) "
              "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (owner, ref) DO UPDATE SET "
              "sha256 = excluded.sha256, created_ms = excluded.created_ms, "
              "expires_ms = excluded.expires_ms")
ROW_COLS = "a.owner, a.sha256, a.size_bytes, a.created_ms, a.last_used_ms"
REF_COLS = "r.ref, r.created_ms, r.expires_ms"
SELECT_ROW = (f"SELECT {ROW_COLS}, {REF_COLS} FROM artifacts a LEFT JOIN artifact_refs r "
              "ON r.owner = a.owner AND r.sha256 = a.sha256 "
              "WHERE a.owner = %s AND a.sha256 = %s ORDER BY r.ref")
SELECT_LIST = (f"SELECT {ROW_COLS}, {REF_COLS} FROM (SELECT * FROM artifacts "
               "WHERE owner = %s ORDER BY last_used_ms DESC, sha256 LIMIT %s) a "
               "LEFT JOIN artifact_refs r ON r.owner = a.owner AND r.sha256 = a.sha256 "
               "ORDER BY a.last_used_ms DESC, a.sha256, r.ref")
SELECT_ALL = (f"SELECT {ROW_COLS}, {REF_COLS} FROM artifacts a LEFT JOIN artifact_refs r "
              "ON r.owner = a.owner AND r.sha256 = a.sha256 ORDER BY a.owner, a.sha256")
RESOLVE = "SELECT sha256 FROM artifact_refs WHERE owner = %s AND ref = %s"
DELETE_REFS_OF = "DELETE FROM artifact_refs WHERE owner = %s AND sha256 = %s"
DELETE_REF = "DELETE FROM artifact_refs WHERE owner = %s AND ref = %s"
DELETE_ROW = "DELETE FROM artifacts WHERE owner = %s AND sha256 = %s"
# ';' sorts right after ':', so [task:T:, task:T;) is every reference of task T.
TASK_REFS = ("SELECT r.ref, r.sha256, a.size_bytes FROM artifact_refs r JOIN artifacts a "
             "ON a.owner = r.owner AND a.sha256 = r.sha256 "
             "WHERE r.owner = %s AND r.ref >= %s AND r.ref < %s ORDER BY r.ref")


def task_ref_range(task_id: str) -> tuple[str, str]:
    return f"task:{task_id}:", f"task:{task_id};"


def rows_from(result: list[tuple[object, ...]]) -> list[ArtifactRow]:
    """Fold joined (row, ref) results into rows with their references."""
    out: list[ArtifactRow] = []
    for owner, sha, size, created, used, ref, ref_created, expires in result:
        refs = ((str(ref), int(ref_created), int(expires)),) if ref is not None else ()  # type: ignore[call-overload]
        if out and out[-1].owner == owner and out[-1].sha256 == sha:
            last = out[-1]
            out[-1] = ArtifactRow(last.owner, last.sha256, last.size_bytes, last.created_ms,
                                  last.last_used_ms, last.refs + refs)
        else:
            out.append(ArtifactRow(str(owner), str(sha), int(size), int(created),  # type: ignore[call-overload]
                                   int(used), refs))  # type: ignore[call-overload]
    return out
