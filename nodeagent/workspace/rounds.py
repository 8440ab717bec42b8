"""One sync round of one attachment, the node's half (the hub's is cortexd/workspaces/hub.py).

1. Scan the copy (incremental: only files whose size/mtime/inode/ctime moved are hashed;
   escaping symlinks are refused, listed, never sent).
2. ``Plan``: the tree goes to the hub in batches; back come the node's actions, the
   digests the hub lacks, and a round id.
3. ``Push`` the lacking blobs (read from this copy, 1 MiB chunks; the hub checks each).
4. Apply the node's actions in the order given, each only if the path still holds what
   this scan saw (else it is reported failed and waits for the next round). A file's
   bytes come from this copy when another path holds the digest (a rename moves none),
   else from one ``Pull`` stream into a staging directory, checked by its sha256.
5. ``Commit`` with the failed paths: the hub applies its side and records what both
   sides now share.
"""

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cortex.v1 import workspace_pb2 as wpb
from cortex.wsmerge import FILE, Entry, WorkspacePathError, check_path
from cortex.wstree import CHUNK_BYTES, TreeScanner, apply_entry, remove_entry

BATCH = 2000


@dataclass(slots=True)
class RoundResult:
    to_node: int = 0
    applied: int = 0
    failed: int = 0
    pushed_bytes: int = 0
    pulled_bytes: int = 0
    conflicts: int = 0
    to_hub: int = 0
    refused: list[str] = field(default_factory=list)


def _entries(tree: dict[str, Entry], scanner: TreeScanner) -> list[wpb.WsEntry]:
    return [wpb.WsEntry(path=p, kind=e.kind, digest=e.digest, executable=e.executable,
                        size_bytes=scanner.size_of(p)) for p, e in tree.items()]


def _read_chunks(path: Path, sha: str) -> Iterator[wpb.BlobChunk]:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        offset = 0
        while True:
            data = f.read(CHUNK_BYTES)
            last = offset + len(data) >= size or not data
            yield wpb.BlobChunk(sha256=sha, size_bytes=size, offset=offset, data=data,
                                last=last)
            offset += len(data)
            if last:
                return


async def run_round(stub: Any, md: Any, name: str, root: Path, scanner: TreeScanner,
                    staging: Path) -> RoundResult:
    out = RoundResult()
    tree = await asyncio.to_thread(scanner.scan)
    out.refused = list(scanner.refused)
    entries = _entries(tree, scanner)

    async def plan_requests() -> AsyncIterator[wpb.PlanRequest]:
        for i in range(0, max(len(entries), 1), BATCH):
            yield wpb.PlanRequest(workspace=name, entries=entries[i:i + BATCH],
                                  refused=out.refused[:1000] if i == 0 else [])
        yield wpb.PlanRequest(workspace=name, done=True)

    actions: list[wpb.WsAction] = []
    need: list[str] = []
    round_id = 0
    async for m in stub.Plan(plan_requests(), metadata=md):
        actions.extend(m.to_node)
        need.extend(m.need)
        if m.done:
            round_id, out.conflicts, out.to_hub = m.round, m.conflicts, m.to_hub
    out.to_node = len(actions)
    local = scanner.by_digest()
    if need:
        out.pushed_bytes = await _push(stub, md, root, local, need)
    failed = await _apply(stub, md, name, root, scanner, tree, actions, local, staging, out)
    out.failed = len(failed)
    out.applied = len(actions) - len(failed)
    await stub.Commit(wpb.CommitRequest(workspace=name, round=round_id, failed=failed),
                      metadata=md, timeout=60.0)
    return out


async def _push(stub: Any, md: Any, root: Path, local: dict[str, str], need: list[str]) -> int:
    sent = 0

    async def chunks() -> AsyncIterator[wpb.BlobChunk]:
        nonlocal sent
        for sha in need:
            rel = local.get(sha)
            if rel is None:
                continue
            gen = _read_chunks(root / rel, sha)
            try:
                while (c := await asyncio.to_thread(next, gen, None)) is not None:
                    sent += len(c.data)
                    yield c
            except OSError:
                continue  # gone since the scan: the hub skips that action
    await stub.Push(chunks(), metadata=md, timeout=3600.0)
    return sent


async def _pull(stub: Any, md: Any, name: str, wanted: list[wpb.WsEntry],
                staging: Path, out: RoundResult) -> set[str]:
    """Fetch these files' blobs into staging; the digests that arrived whole."""
    staging.mkdir(parents=True, exist_ok=True)
    got: set[str] = set()
    fd, h, part = -1, hashlib.sha256(), staging / "x"
    async for c in stub.Pull(wpb.PullRequest(workspace=name, files=wanted), metadata=md):
        if c.offset == 0:
            if fd >= 0:
                os.close(fd)
            part = staging / f"{c.sha256}.part"
            fd, h = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), hashlib.sha256()
        os.write(fd, c.data)
        h.update(c.data)
        out.pulled_bytes += len(c.data)
        if c.last:
            os.close(fd)
            fd = -1
            if not c.error and h.hexdigest() == c.sha256:
                os.replace(part, staging / c.sha256)
                got.add(c.sha256)
            else:
                part.unlink(missing_ok=True)
    if fd >= 0:
        os.close(fd)
    return got


async def _apply(stub: Any, md: Any, name: str, root: Path, scanner: TreeScanner,
                 tree: dict[str, Entry], actions: list[wpb.WsAction], local: dict[str, str],
                 staging: Path, out: RoundResult) -> list[str]:
    wanted = {a.entry.digest: a.entry for a in actions
              if a.HasField("entry") and a.entry.kind == FILE
              and a.entry.digest not in local}
    pulled = await _pull(stub, md, name, list(wanted.values()), staging, out) if wanted \
        else set()

    def apply_all() -> list[str]:
        failed = []
        for a in actions:
            try:
                rel = check_path(a.path)
                if scanner.entry_now(rel) != tree.get(rel):
                    failed.append(a.path)  # changed here since the scan
                    continue
                if not a.HasField("entry"):
                    if remove_entry(root, rel):
                        scanner.cache.pop(rel, None)
                    else:
                        failed.append(a.path)
                    continue
                e = Entry(a.entry.kind, a.entry.digest, a.entry.executable)
                source = None
                if e.kind == FILE:
                    source = staging / e.digest if e.digest in pulled else (
                        root / local[e.digest] if e.digest in local else None)
                    if source is None:
                        failed.append(a.path)
                        continue
                apply_entry(root, rel, e, source)
                scanner.note(rel, e)
                if e.kind == FILE:
                    local.setdefault(e.digest, rel)
            except (OSError, WorkspacePathError):
                failed.append(a.path)
        for sha in pulled:
            (staging / sha).unlink(missing_ok=True)
        return failed
    return await asyncio.to_thread(apply_all)
