"""The sidecar RAM handoff: large payloads cross as a file in /dev/shm, not on the socket.

The writer (browserd) writes the bytes once into ``DIR/cortex-bd-<reader pid>-<token>``
(mode 0600, O_EXCL) and sends ``{"shm": path, "size": n, "sha256": hex}``; its sha256 runs
in a second thread while the write runs (both release the GIL), so the two passes overlap.
The reader opens, unlinks and maps the file: :func:`take_view` returns the mapping itself
(no copy; the node agent cuts its 256 KiB reply pieces straight out of it), :func:`take`
copies it out and checks the sha256 (for callers that want ``bytes``). A view is not
re-hashed: the file is the reader's own (owner checked, created exclusively by the writer,
unlinked before it is read), and the writer's sha256 travels on with the bytes and is
checked where they arrive (the hub, then cortexctl). The reader's pid in the name is what
makes sweeping safe: :func:`sweep` removes files whose reader is no longer alive (a reader
that crashed between the answer and the take) and files older than ``max_age_s`` (a reader
that never took them).

Copies of the payload (``bench/browserd_shm.py`` measures both): through /dev/shm one (the
write into tmpfs; the view is the same pages), against six inline (msgpack pack, header
join, the socket write into the kernel, the kernel to the reader's buffer, ``readexactly``,
msgpack unpack).
"""

import hashlib
import mmap
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from browserd.errors import HandoffError

DEFAULT_DIR = Path("/dev/shm")
PREFIX = "cortex-bd-"


def put(data: bytes, reader_pid: int, directory: Path = DEFAULT_DIR) -> dict[str, Any]:
    path = directory / f"{PREFIX}{reader_pid}-{secrets.token_hex(8)}"
    digest = hashlib.sha256()
    hashing = threading.Thread(target=digest.update, args=(data,), daemon=True)
    hashing.start()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    finally:
        hashing.join()
    return {"shm": str(path), "size": len(data), "sha256": digest.hexdigest()}


def is_ref(value: Any) -> bool:
    return isinstance(value, dict) and "shm" in value and "sha256" in value


def _open(ref: dict[str, Any], directory: Path) -> tuple[int, int]:
    """Open and unlink the file ``ref`` names; (fd, size) after the checks."""
    path = Path(str(ref.get("shm", "")))
    if path.parent != directory or not path.name.startswith(PREFIX):
        raise HandoffError(f"handoff path {path} is outside {directory}")
    size = int(ref.get("size", -1))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise HandoffError(f"handoff file {path}: {e.strerror}") from e
    try:
        os.unlink(path)
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise HandoffError(f"handoff file {path} is owned by uid {st.st_uid}, not ours")
        if st.st_size != size:
            raise HandoffError(f"handoff file {path} holds {st.st_size} bytes, "
                               f"expected {size}")
    except BaseException:
        os.close(fd)
        raise
    return fd, size


def take_view(ref: dict[str, Any], directory: Path = DEFAULT_DIR) -> memoryview:
    """Open, unlink and map one handoff file: the mapping, read-only, not copied. The
    pages go when the last view of it is dropped."""
    fd, size = _open(ref, directory)
    try:
        if size == 0:
            return memoryview(b"")
        mapped = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE,
                           prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    return memoryview(mapped)


def take(ref: dict[str, Any], directory: Path = DEFAULT_DIR) -> bytes:
    """Map, verify (sha256), copy out and unlink one handoff file."""
    view = take_view(ref, directory)
    try:
        if hashlib.sha256(view).hexdigest() != ref.get("sha256"):
            raise HandoffError(f"handoff file {ref.get('shm')}: sha256 mismatch")
        return view.tobytes()
    finally:
        view.release()


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
