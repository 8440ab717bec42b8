"""The sidecar RAM handoff: large payloads cross as a file in /dev/shm, not on the socket.

The writer (browserd) writes the bytes once into ``DIR/cortex-bd-<reader pid>-<token>``
(mode 0600) and sends ``{"shm": path, "size": n, "sha256": hex}``; the reader maps the
file, checks size and sha256, copies it out once and unlinks it (:func:`take`). The
reader's pid in the name is what makes sweeping safe: :func:`sweep` removes files whose
reader is no longer alive (a reader that crashed between the answer and the take) and
files older than ``max_age_s`` (a reader that never took them). Copies: the bytes are
written once by the writer and read once by the reader, against four socket copies
inline (writer → kernel → reader, plus msgpack framing on each side); ``bench/browserd_shm.py``
measures both.
"""

import hashlib
import mmap
import os
import secrets
import time
from pathlib import Path
from typing import Any

from browserd.errors import HandoffError

DEFAULT_DIR = Path("/dev/shm")
PREFIX = "cortex-bd-"


def put(data: bytes, reader_pid: int, directory: Path = DEFAULT_DIR) -> dict[str, Any]:
    path = directory / f"{PREFIX}{reader_pid}-{secrets.token_hex(8)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    return {"shm": str(path), "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def is_ref(value: Any) -> bool:
    return isinstance(value, dict) and "shm" in value and "sha256" in value


def take(ref: dict[str, Any], directory: Path = DEFAULT_DIR) -> bytes:
    """Map, verify, copy out and unlink one handoff file."""
    path = Path(str(ref.get("shm", "")))
    if path.parent != directory or not path.name.startswith(PREFIX):
        raise HandoffError(f"handoff path {path} is outside {directory}")
    size = int(ref.get("size", -1))
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise HandoffError(f"handoff file {path}: {e.strerror}") from e
    try:
        os.unlink(path)
        if os.fstat(fd).st_size != size:
            raise HandoffError(f"handoff file {path} holds {os.fstat(fd).st_size} bytes, "
                               f"expected {size}")
        if size == 0:
            return b""
        with mmap.mmap(fd, size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE,
                       prot=mmap.PROT_READ) as mapped:
            if hashlib.sha256(mapped).hexdigest() != ref.get("sha256"):
                raise HandoffError(f"handoff file {path}: sha256 mismatch")
            return mapped[:]
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(directory: Path = DEFAULT_DIR, max_age_s: float = 60.0) -> int:
    """Remove handoff files of dead readers and files left longer than ``max_age_s``."""
    removed = 0
    now = time.time()
    try:
        entries = list(directory.glob(f"{PREFIX}*"))
    except OSError:
        return 0
    for path in entries:
        try:
            pid = int(path.name[len(PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        try:
            old = now - path.stat().st_mtime > max_age_s
        except FileNotFoundError:
            continue
        if old or not _alive(pid):
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
    return removed
