"""The hub's workspace blobs: content-addressed, checked on arrival, shared by workspaces.

``STATE_DIR/workspaces/.blobs/ab/<sha256>`` holds the bytes a node or cortexctl pushed
(and a conflict's losing version, kept by ``resolve``), each whole and checked: a blob is
written to ``<sha256>.<random>.part`` as its chunks arrive, hashed as it goes, and renamed
into place only when its size and sha256 match what the first chunk declared; a mismatch
keeps nothing. Each push has a part file of its own: two pushes of one blob at once (two
nodes with the same new file) once shared ``<sha256>.part``, and the second's truncation
left zeros in the blob the first then stored. A kill -9 mid-push leaves at most ``.part``
files (``sweep`` removes them when the hub starts), never a wrong blob. Files move into
a tree from here by copy (the copy is hashed again, ``cortex/wstree.apply_entry``), so a
blob is only ever a way station, or a conflict's version: ``collect`` (run by
``cortexd/workspaces/gc.py``) removes those no conflict names once unused for a while.

``pull_chunks`` serves the hub's files: a blob when there is one, else the file at its
path in the hub tree, hashed while read; a file that changed since it was planned ends
with ``error`` and the node skips that action until the next round.
"""

import hashlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cortex.wsmerge import WorkspacePathError
from cortex.wstree import CHUNK_BYTES, safe_path

MAX_CHUNK_BYTES = 1 << 20


def _is_sha256(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


class PushRefused(Exception):
    """A chunk out of order, too large, or a blob whose bytes are not its sha256."""


@dataclass(slots=True)
class _Incoming:
    sha256: str
    size: int
    path: Path
    fd: int
    got: int
    hasher: "hashlib._Hash"


class BlobDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._in: _Incoming | None = None

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        """Whether the blob is here. Asking counts as a use: its mtime becomes now, and
        ``collect`` keeps a blob for its grace period after the last use."""
        if not _is_sha256(sha256):
            return False
        try:
            os.utime(self.path(sha256))
        except OSError:
            return False
        return True

    def collect(self, keep: set[str], unused_since: float) -> tuple[int, int]:
        """Remove every blob not in ``keep`` whose last use (mtime) is before
        ``unused_since`` (a ``time.time()``); (blobs, bytes) removed. One removed under a
        round that planned with it costs that round's action a retry, nothing more."""
        count = size = 0
        for path in self.root.glob("*/*"):
            if not _is_sha256(path.name) or path.name in keep:
                continue  # part files are the sweep's
            try:
                st = path.stat()
                if st.st_mtime >= unused_since:
                    continue
                path.unlink()
            except OSError:
                continue
            count, size = count + 1, size + st.st_size
        return count, size

    def _part(self, sha256: str) -> Path:
        """A part file for one push (or keep) of ``sha256``, nobody else's."""
        final = self.path(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        return final.with_name(f"{sha256}.{secrets.token_hex(8)}.part")

    def sweep(self) -> int:
        """Remove the part files a killed hub left (call before any push can run)."""
        n = 0
        for part in self.root.glob("*/*.part"):
            part.unlink(missing_ok=True)
            n += 1
        return n

    def receive(self, sha256: str, size: int, offset: int, data: bytes, last: bool) -> bool | None:
        """One pushed chunk; True when a blob was stored, False when it was refused (its
        bytes did not hash to its name), None while it is incomplete."""
        if len(data) > MAX_CHUNK_BYTES:
            raise PushRefused(f"chunk of {len(data)} bytes (at most {MAX_CHUNK_BYTES})")
        if not _is_sha256(sha256):
            raise PushRefused(f"{sha256[:70]!r} is not a sha256")
        cur = self._in
        if cur is None or cur.sha256 != sha256:
            self._abandon()
            if offset != 0:
                raise PushRefused(f"{sha256[:16]}: first chunk at offset {offset}")
            part = self._part(sha256)
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            cur = self._in = _Incoming(sha256, size, part, fd, 0, hashlib.sha256())
        if offset != cur.got or cur.got + len(data) > cur.size:
            self._abandon()
            raise PushRefused(f"{sha256[:16]}: chunk at {offset}, expected {cur.got}")
        os.write(cur.fd, data)
        cur.hasher.update(data)
        cur.got += len(data)
        if not last:
            return None
        os.close(cur.fd)
        self._in = None
        if cur.got != cur.size or cur.hasher.hexdigest() != sha256:
            cur.path.unlink(missing_ok=True)
            return False
        os.chmod(cur.path, 0o444)
        os.replace(cur.path, self.path(sha256))
        return True

    def _abandon(self) -> None:
        if self._in is not None:
            os.close(self._in.fd)
            self._in.path.unlink(missing_ok=True)
            self._in = None

    def close(self) -> None:
        self._abandon()

    def keep(self, source: Path, sha256: str) -> None:
        """Keep a copy of a tree file as a blob (a version about to be replaced)."""
        if self.has(sha256):
            return
        part = self._part(sha256)
        h = hashlib.sha256()
        with open(source, "rb") as src, open(part, "wb") as dst:
            while chunk := src.read(CHUNK_BYTES):
                h.update(chunk)
                dst.write(chunk)
        if h.hexdigest() != sha256:
            part.unlink(missing_ok=True)
            return
        os.chmod(part, 0o444)
        os.replace(part, self.path(sha256))


def pull_chunks(blobs: BlobDir, tree_root: Path, rel: str,
                sha256: str) -> Iterator[tuple[int, bytes, bool, str]]:
    """(offset, data, last, error) pieces of one file for Pull."""
    source = blobs.path(sha256)
    if not source.exists():
        try:
            source = safe_path(tree_root, rel)
        except WorkspacePathError as e:
            yield 0, b"", True, str(e)
            return
    try:
        f = open(source, "rb")
    except OSError as e:
        yield 0, b"", True, f"{rel}: {e.strerror}"
        return
    with f:
        h, offset = hashlib.sha256(), 0
        chunk = f.read(CHUNK_BYTES)
        while True:
            h.update(chunk)
            nxt = f.read(CHUNK_BYTES) if len(chunk) == CHUNK_BYTES else b""
            last = not nxt
            error = "" if not last or h.hexdigest() == sha256 else f"{rel}: changed"
            yield offset, chunk, last, error
            if last:
                return
            offset += len(chunk)
            chunk = nxt
