"""The sha256 of a file, read in 1 MiB pieces: artifacts, workspaces and recordings all
name files by it (content-addressed, ``artifacts.proto``)."""

import hashlib
from collections.abc import Callable
from pathlib import Path

READ_BYTES = 1 << 20


def file_sha256(path: Path, progress: Callable[[int], None] | None = None) -> tuple[str, int]:
    """(hex digest, size in bytes) of ``path``; ``progress`` gets each piece's length."""
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(READ_BYTES):
            h.update(chunk)
            n += len(chunk)
            if progress:
                progress(len(chunk))
    return h.hexdigest(), n
