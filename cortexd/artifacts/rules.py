"""The artifact rules, pure: names, digests, chunk checks, task paths and the gc plan.

No I/O here: the service (``service.py``) and the backends call these, and the unit
tests drive them directly. Invariants:

- A digest is 64 lowercase hex digits and a size in [0, ``max_bytes``].
- A chunk is accepted only at the committed offset, at most ``MAX_CHUNK_BYTES`` long,
  never past the declared size; ``finish`` only when the committed end equals the size.
  Anything else is refused with a message that says what the hub has (the client then
  asks QueryWriteStatus), and nothing of the refused chunk is kept.
- A task path is relative, normalised, and cannot leave the task's directory.
- A blob goes only when no owner's artifact row names it; an artifact row goes only when
  it has no reference and was not used for ``grace``.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass

from cortex.errors import CortexError

MAX_CHUNK_BYTES = 1 << 20
#: What clients send per message: the largest chunk (fewest messages, ByteStream's habit).
CHUNK_BYTES = 1 << 20
MIN_CHUNK_BYTES = 64 << 10  # the smallest a reader asks for (the last chunk may be shorter)
SHA256_RE = re.compile(r"[0-9a-f]{64}")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+-]{0,199}")
MAX_TASK_FILES = 64
MAX_PATH_BYTES = 1024


class ArtifactError(CortexError):
    """A refused artifact request; ``code`` names the gRPC status it maps to."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def invalid(message: str) -> ArtifactError:
    return ArtifactError("INVALID_ARGUMENT", message)


def check_digest(sha256: str, size: int, max_bytes: int) -> None:
    if not SHA256_RE.fullmatch(sha256):
        raise invalid(f"sha256 {sha256[:80]!r} is not 64 lowercase hex digits")
    if size > max_bytes:
        raise ArtifactError("RESOURCE_EXHAUSTED",
                            f"artifact of {size} bytes is over the hub's limit of {max_bytes}")


def check_name(name: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise invalid(f"artifact name {name[:80]!r} must match {NAME_RE.pattern}")


def check_chunk(committed: int, size: int, offset: int, length: int, finish: bool) -> None:
    """Refuse a chunk the hub cannot append at ``committed`` of a ``size``-byte blob."""
    if length > MAX_CHUNK_BYTES:
        raise invalid(f"chunk of {length} bytes is over the limit of {MAX_CHUNK_BYTES}")
    if offset != committed:
        raise ArtifactError("OUT_OF_RANGE",
                            f"write_offset {offset} is not where the upload stands: the hub "
                            f"has committed {committed} bytes (ask QueryWriteStatus)")
    if offset + length > size:
        raise invalid(f"chunk at {offset} of {length} bytes runs past the declared size "
                      f"{size}")
    if finish and offset + length != size:
        raise invalid(f"finish_write at {offset + length} bytes, but the declared size is "
                      f"{size}")


def name_ref(name: str) -> str:
    return f"name:{name}"


def task_ref(task_id: str, kind: str, path: str) -> str:
    return f"task:{task_id}:{kind}:{path}"


def check_task_path(path: str) -> str:
    """A task's input or output path: relative to its working directory, inside it."""
    if not path or len(path.encode()) > MAX_PATH_BYTES or "\x00" in path:
        raise invalid(f"path {path[:80]!r} must be 1 to {MAX_PATH_BYTES} bytes, no NUL")
    if path.startswith("/"):
        raise invalid(f"path {path!r} must be relative to the task's working directory")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise invalid(f"path {path!r} may not contain '..' or be empty")
    return "/".join(parts)


def check_task_files(inputs: Iterable[tuple[str, int, str]], outputs: Iterable[str],
                     max_bytes: int) -> tuple[list[tuple[str, int, str]], list[str]]:
    """Validate a submission's (sha256, size, path) inputs and output paths; normalised."""
    ins = [(sha, size, check_task_path(path)) for sha, size, path in inputs]
    outs = [check_task_path(p) for p in outputs]
    if len(ins) > MAX_TASK_FILES or len(outs) > MAX_TASK_FILES:
        raise invalid(f"at most {MAX_TASK_FILES} inputs and {MAX_TASK_FILES} outputs")
    for sha, size, _ in ins:
        check_digest(sha, size, max_bytes)
    paths = [p for _, _, p in ins] + outs
    if len(set(paths)) != len(paths):
        raise invalid("a path is named twice among the inputs and outputs")
    return ins, outs


@dataclass(frozen=True, slots=True)
class Retention:
    task_ref_s: float       # a task's input/output reference lasts this long
    grace_s: float          # an unreferenced artifact is kept this long after last use
    partial_ttl_s: float    # an upload nobody continued for this long is dropped


@dataclass(frozen=True, slots=True)
class ArtifactRow:
    owner: str
    sha256: str
    size_bytes: int
    created_ms: int
    last_used_ms: int
    refs: tuple[tuple[str, int, int], ...] = ()  # (ref, created_ms, expires_ms)


@dataclass(frozen=True, slots=True)
class GcPlan:
    refs: list[tuple[str, str]]        # (owner, ref) expired
    artifacts: list[tuple[str, str]]   # (owner, sha256) unreferenced past grace
    blobs: list[str]                   # sha256 no owner names any more


def plan_gc(rows: Iterable[ArtifactRow], blobs: Iterable[str], now_ms: int,
            policy: Retention) -> GcPlan:
    """What a collection removes, given every artifact row (with refs) and every blob."""
    refs: list[tuple[str, str]] = []
    gone: list[tuple[str, str]] = []
    kept: set[str] = set()
    grace_ms = int(policy.grace_s * 1000)
    for row in rows:
        live = 0
        for ref, _created, expires in row.refs:
            if expires and expires <= now_ms:
                refs.append((row.owner, ref))
            else:
                live += 1
        if live == 0 and row.last_used_ms + grace_ms <= now_ms:
            gone.append((row.owner, row.sha256))
        else:
            kept.add(row.sha256)
    return GcPlan(refs, gone, sorted(set(blobs) - kept))
