"""The per-attempt output spool on disk (DESIGN.md §5; docs/protocol.md, "Output").

Layout: ``<state_dir>/tasks/<task_id>.<attempt>/`` holding ``output`` (append-only bytes,
every byte the PTY produced, in order) and ``meta.json`` (who the attempt is, how it ended,
what the hub last acknowledged). Invariants:

- Every output byte is written here before it is offered to the hub, so a byte the hub
  has not acknowledged can always be re-read and resent (``read(offset, max_bytes)``).
- ``output`` only grows; ``end`` is its length. The spool is deleted only after the hub's
  ``FinishedAck`` (or a ``KILL`` verdict), never earlier; after ``FinishedAck`` it is
  marked ``retained_at`` and kept for ``cortexctl logs`` under the retention limits
  (``nodeagent/retention.py``), read with :func:`read_range`.
- ``meta.json`` is replaced atomically (write, then rename), so a crash leaves the old or
  the new version, never half of one.
"""

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cortex.ids import is_task_id
from nodeagent.errors import SpoolError

OUTPUT = "output"
META = "meta.json"


@dataclass(slots=True)
class SpoolMeta:
    task_id: str
    attempt: int
    command: str
    started_at: float
    pid: int = 0
    pid_start_ticks: int = 0  # /proc/<pid>/stat starttime: tells a reused pid apart
    finished_at: float | None = None
    exit_code: int | None = None
    kind: str | None = None  # a FinishKind name (EXITED, CANCELLED, TIMED_OUT, LOST)
    reason: str = ""
    acked_offset: int = 0
    retained_at: float | None = None  # FinishedAck came: kept only for reads (retention.py)

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


def spool_dir(root: Path, task_id: str, attempt: int) -> Path:
    return root / f"{task_id}.{attempt}"


class TaskSpool:
    """One attempt's output file and metadata; opened for append and for reading."""

    def __init__(self, path: Path, meta: SpoolMeta) -> None:
        self.path = path
        self.meta = meta
        try:
            self._wfd = os.open(path / OUTPUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                                | os.O_CLOEXEC, 0o600)
            self._rfd = os.open(path / OUTPUT, os.O_RDONLY | os.O_CLOEXEC)
            self.end = os.fstat(self._rfd).st_size
        except OSError as e:
            raise SpoolError(f"cannot open spool {path}: {e.strerror}") from e
        self._closed = False

    @classmethod
    def create(cls, root: Path, meta: SpoolMeta) -> "TaskSpool":
        path = spool_dir(root, meta.task_id, meta.attempt)
        try:
            if path.exists():  # debris of a start that never recorded a run: start clean
                shutil.rmtree(path)
            path.mkdir(parents=True, mode=0o700)
        except OSError as e:
            raise SpoolError(f"cannot create spool {path}: {e.strerror}") from e
        spool = cls(path, meta)
        spool.save_meta(durable=True)
        return spool

    @classmethod
    def open(cls, path: Path) -> "TaskSpool":
        """Reopen a spool left by an earlier agent process."""
        try:
            raw = json.loads((path / META).read_text())
            meta = SpoolMeta(**raw)
        except (OSError, ValueError, TypeError) as e:
            raise SpoolError(f"spool {path} has no readable {META}: {e}") from e
        if not is_task_id(meta.task_id) or path.name != f"{meta.task_id}.{meta.attempt}":
            raise SpoolError(f"spool {path} does not match its {META}")
        return cls(path, meta)

    def append(self, data: bytes) -> int:
        """Append ``data``; returns the new end offset."""
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._wfd, view)
                view = view[written:]
        except OSError as e:
            raise SpoolError(f"cannot append to spool {self.path}: {e.strerror}") from e
        self.end += len(data)
        return self.end

    def read(self, offset: int, max_bytes: int) -> bytes:
        """Bytes ``[offset, min(offset + max_bytes, end))``; empty at or past the end."""
        if offset < 0 or max_bytes < 0:
            raise ValueError("offset and max_bytes must be >= 0")
        length = min(max_bytes, self.end - offset)
        if length <= 0:
            return b""
        try:
            return os.pread(self._rfd, length, offset)
        except OSError as e:
            raise SpoolError(f"cannot read spool {self.path}: {e.strerror}") from e

    def save_meta(self, durable: bool = False) -> None:
        tmp = self.path / (META + ".tmp")
        try:
            with open(tmp, "w") as f:
                json.dump(asdict(self.meta), f)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, self.path / META)
        except OSError as e:
            raise SpoolError(f"cannot write {self.path / META}: {e.strerror}") from e

    def finish(self, *, exit_code: int, kind: str, reason: str) -> None:
        self.meta.finished_at = time.time()
        self.meta.exit_code = exit_code
        self.meta.kind = kind
        self.meta.reason = reason
        self.save_meta(durable=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._wfd)
            os.close(self._rfd)

    def delete(self) -> None:
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)


def read_range(path: Path, offset: int, max_bytes: int) -> bytes:
    """Bytes ``[offset, offset + max_bytes)`` of a closed spool's output (short at its end)."""
    try:
        fd = os.open(path / OUTPUT, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise SpoolError(f"cannot open spool {path}: {e.strerror}") from e
    try:
        return os.pread(fd, max_bytes, offset)
    except OSError as e:
        raise SpoolError(f"cannot read spool {path}: {e.strerror}") from e
    finally:
        os.close(fd)


def scan(root: Path) -> tuple[list[TaskSpool], list[tuple[Path, str]]]:
    """Open every spool under ``root``; returns (spools, [(unreadable path, why)])."""
    spools: list[TaskSpool] = []
    bad: list[tuple[Path, str]] = []
    if not root.is_dir():
        return spools, bad
    for path in sorted(root.iterdir()):
        if not path.is_dir():
            continue
        try:
            spools.append(TaskSpool.open(path))
        except SpoolError as e:
            bad.append((path, str(e)))
    return spools, bad
