"""A workspace tree on disk: the incremental scan and the safe writes (both sides).

The hub's copy, each node's copy and ``cortexctl workspace create --from`` read trees
with :class:`TreeScanner` and change them with :func:`apply_entry` /
:func:`remove_entry`. The decisions are elsewhere (``cortex/wsmerge.py``, pure).

Invariants:

- **Incremental**: a file is hashed again only when its (size, mtime_ns, inode, ctime_ns)
  changed since the last scan; everything else comes from the scanner's cache.
- **Nothing escapes the root**: the scan never follows a symlink (``lstat``; a link is
  an entry with its target); a link whose target is absolute or leaves the root is
  *refused* (left out of the tree, listed in ``refused``) rather than synced. A write
  goes through :func:`safe_path`, which refuses a path whose parent on disk is a
  symlink or not a directory, so a link planted by one side cannot carry a write of
  the other side out of the root.
- **Ignores** use gitignore syntax (``pathspec``) from ``.cortexignore`` at the root, plus
  the scratch names this module writes (``.cortex-tmp-*``), which no side ever syncs.
- **Writes are atomic**: a file is written to a scratch name beside its path and renamed
  over it, so the other side and a crash see either the old or the new whole file.
- Entry kinds: regular files (with the executable bit), directories (empty ones too),
  symlinks. Anything else (sockets, fifos, devices) is left out.
"""

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pathspec

from cortex.digests import file_sha256
from cortex.wsmerge import DIR, FILE, LINK, Entry, WorkspacePathError, check_link, check_path

IGNORE_FILE = ".cortexignore"
TMP_PREFIX = ".cortex-tmp-"
CHUNK_BYTES = 1 << 20
StatKey = tuple[int, int, int, int]


class StaleSource(WorkspacePathError):
    """The bytes meant for a file no longer hash to its digest (changed meanwhile)."""


def _key(st: os.stat_result) -> StatKey:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def load_ignores(root: Path) -> "pathspec.PathSpec[Any]":
    lines = [f"{TMP_PREFIX}*"]
    try:
        lines += (root / IGNORE_FILE).read_text(errors="replace").splitlines()
    except OSError:
        pass
    return pathspec.PathSpec.from_lines("gitignore", lines)


@dataclass(slots=True)
class TreeScanner:
    """One tree's scans; ``cache`` keeps (stat key, entry) per path between scans."""
    root: Path
    cache: dict[str, tuple[StatKey, Entry, int]] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    hashed: int = 0          # files hashed by the last scan
    hashed_total: int = 0

    def scan(self) -> dict[str, Entry]:
        self.root.mkdir(parents=True, exist_ok=True)
        ignores = load_ignores(self.root)
        tree: dict[str, Entry] = {}
        cache: dict[str, tuple[StatKey, Entry, int]] = {}
        self.refused, self.hashed = [], 0
        for rel, full, st in self._walk(self.root, "", ignores):
            entry = self._entry(rel, full, st)
            if entry is not None:
                tree[rel] = entry
                cache[rel] = (_key(st), entry, st.st_size)
        self.cache = cache
        self.hashed_total += self.hashed
        return tree

    def _walk(self, top: Path, prefix: str,
              ignores: "pathspec.PathSpec[Any]") -> Iterator[tuple[str, Path, os.stat_result]]:
        try:
            items = sorted(os.scandir(top), key=lambda d: d.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        for d in items:
            rel = f"{prefix}{d.name}"
            try:
                st = d.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if ignores.match_file(rel + "/" if is_dir else rel):
                continue
            yield rel, Path(d.path), st
            if is_dir:
                yield from self._walk(Path(d.path), rel + "/", ignores)

    def _entry(self, rel: str, full: Path, st: os.stat_result) -> Entry | None:
        try:
            check_path(rel)
        except WorkspacePathError:
            self.refused.append(rel)
            return None
        if stat.S_ISDIR(st.st_mode):
            return Entry(DIR)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(full)
            try:
                check_link(rel, target)
            except WorkspacePathError:
                self.refused.append(rel)
                return None
            return Entry(LINK, target)
        if not stat.S_ISREG(st.st_mode):
            return None
        executable = bool(st.st_mode & 0o111)
        old = self.cache.get(rel)
        if old is not None and old[0] == _key(st):
            return Entry(FILE, old[1].digest, executable)
        try:
            digest, _ = file_sha256(full)
        except OSError:
            return None
        self.hashed += 1
        return Entry(FILE, digest, executable)

    def entry_now(self, rel: str) -> Entry | None:
        """The entry at one path as it is on disk now (a precondition check)."""
        try:
            full = safe_path(self.root, rel)
            st = os.lstat(full)
        except (FileNotFoundError, NotADirectoryError, WorkspacePathError):
            return None
        entry = self._entry(rel, full, st)
        if entry is not None:
            self.cache[rel] = (_key(st), entry, st.st_size)
        return entry

    def note(self, rel: str, entry: Entry) -> None:
        """Remember what this side just wrote at ``rel`` (no hashing it again)."""
        try:
            st = os.lstat(self.root / rel)
        except OSError:
            self.cache.pop(rel, None)
            return
        self.cache[rel] = (_key(st), entry, st.st_size)

    def size_of(self, rel: str) -> int:
        got = self.cache.get(rel)
        return got[2] if got else 0

    def by_digest(self) -> dict[str, str]:
        """sha256 -> one path holding it (a rename or a copy moves no bytes)."""
        return {e.digest: p for p, (_, e, _) in self.cache.items() if e.kind == FILE}


def sweep_scratch(root: Path) -> int:
    """Remove scratch files a crash left mid-write (at start, before any sync runs)."""
    n = 0
    for p in root.rglob(f"{TMP_PREFIX}*"):
        if not p.is_dir() or p.is_symlink():
            p.unlink(missing_ok=True)
            n += 1
    return n


def safe_path(root: Path, rel: str) -> Path:
    """``root/rel`` once every parent below the root is a real directory (no symlink)."""
    rel = check_path(rel)
    parts = rel.split("/")
    cur = root
    for part in parts[:-1]:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            return root / rel  # parents are created by their own (earlier) actions
        if not stat.S_ISDIR(st.st_mode):
            raise WorkspacePathError(f"{rel!r}: parent {part!r} is not a directory")
    return root / rel


def scratch(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}"[:255])


def apply_entry(root: Path, rel: str, entry: Entry, source: Path | None = None) -> None:
    """Make ``rel`` be ``entry``; a file's bytes come from ``source`` (checked already)."""
    path = safe_path(root, rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    if entry.kind == DIR:
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            path.unlink()
        path.mkdir(exist_ok=True)
        return
    if entry.kind == LINK:
        check_link(rel, entry.digest)
        tmp = scratch(path)
        tmp.unlink(missing_ok=True)
        os.symlink(entry.digest, tmp)
        _replace(tmp, path)
        return
    assert source is not None
    tmp = scratch(path)
    h = hashlib.sha256()
    with open(source, "rb") as src, open(tmp, "wb") as dst:
        while chunk := src.read(CHUNK_BYTES):
            h.update(chunk)
            dst.write(chunk)
    if h.hexdigest() != entry.digest:  # the source changed under us: write nothing
        tmp.unlink(missing_ok=True)
        raise StaleSource(f"{rel!r}: the bytes at hand are not {entry.digest[:16]}")
    os.chmod(tmp, 0o755 if entry.executable else 0o644)
    _replace(tmp, path)


def _replace(tmp: Path, path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        try:
            path.rmdir()
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
    os.replace(tmp, path)


def remove_entry(root: Path, rel: str) -> bool:
    """Delete ``rel`` (a directory only if empty); False if it could not be removed."""
    path = safe_path(root, rel)
    try:
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True
