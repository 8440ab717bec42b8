"""The hub's workspace blobs (cortexd/workspaces/blobs.py): whole, checked, and safe when
two pushes of one blob overlap (two nodes with the same new file, or a retry while the
first push still runs) — each Push call has a BlobDir of its own over one directory."""

import hashlib
import os
from pathlib import Path

from cortexd.workspaces.blobs import BlobDir

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
