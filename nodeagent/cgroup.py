"""A cgroup per task, where the host lets the agent write cgroups (DESIGN.md §5; issue 3).

Layouts, best first (:meth:`CgroupTree.open` probes them once, at agent start):

- **cgroup v2 with controllers**: the agent's own v2 cgroup can delegate ``memory`` and
  ``pids``; each task's directory gets ``memory.max`` (and ``memory.swap.max = 0``) and
  ``pids.max``, and is ended with ``cgroup.kill``.
- **v1 hierarchies** (``pids``, ``memory``) for the limits (``pids.max``,
  ``memory.limit_in_bytes`` and ``memory.memsw.limit_in_bytes``), plus the v2 ("unified")
  hierarchy of a hybrid host, controller-less, when it offers ``cgroup.kill``. Without
  it, a task's cgroup is ended by SIGKILLing what ``cgroup.procs`` lists until it is
  empty; a process forked meanwhile is listed on the next read, and ``pids.max`` bounds
  how many there can be.
- **none writable**: process groups and sessions only (:mod:`nodeagent.procgroup`); the
  agent reports ``process-group`` in ``Hello.isolation``.

Invariants:

- The agent's cgroups live *under its own* cgroup in each hierarchy
  (``<own>/cortex-nodeagent-<pid>-<nonce>/task-<task>-<attempt>``), so a limit set on the
  agent by whoever started it still covers its tasks. A start-up sweep removes the
  directories of agents whose pid is gone, killing what they left.
- A task is placed in its cgroups by its own first process, before it runs any task code
  (:data:`nodeagent.ptyspawn.ENTER_THEN_EXEC` writes ``$$`` into every ``cgroup.procs``
  and only then ``exec``s the command), so nothing it forks can start outside them.
- A task's directories are removed only after every process in them is gone.
"""

import contextlib
import os
import re
import secrets
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodeagent import procgroup
from nodeagent.errors import NodeAgentError

CGROUP = "cgroup"
PROCESS_GROUP = "process-group"
ISOLATION_CHOICES = ("auto", CGROUP, PROCESS_GROUP)
AGENT_DIR_PREFIX = "cortex-nodeagent-"
_AGENT_DIR = re.compile(re.escape(AGENT_DIR_PREFIX) + r"(\d+)-[0-9a-f]+$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
KILL_ROUNDS = 200  # cgroup.procs reads when there is no cgroup.kill


class CgroupError(NodeAgentError):
    """The agent's or a task's cgroup could not be created or set up."""


@dataclass(frozen=True, slots=True)
class Limits:
    memory_max_bytes: int = 0  # 0: no limit
    pids_max: int = 0


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """One mounted hierarchy the agent may write: ``kind`` is ``v2``, ``pids``,
    ``memory`` or ``unified`` (a controller-less v2 used only to kill)."""
    kind: str
    own: Path  # the agent's own cgroup in it


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as e:
        raise CgroupError(f"cannot write {value.strip()!r} to {path}: {e.strerror}") from e


def _pids_in(directory: Path) -> list[int]:
    return [int(p) for p in _read(directory / "cgroup.procs").split()]


def discover(mounts_text: str, self_cgroup_text: str) -> list[Hierarchy]:
    """The hierarchies of interest from ``/proc/self/mounts`` and ``/proc/self/cgroup``."""
    own: dict[str, str] = {}
    for line in self_cgroup_text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in (parts[1].split(",") if parts[1] else ["0::"]):
                own[controller] = parts[2]
    found: list[Hierarchy] = []
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        mountpoint, fstype, options = fields[1], fields[2], fields[3].split(",")
        if fstype == "cgroup2" and "0::" in own:
            base = Path(mountpoint) / own["0::"].lstrip("/")
            controllers = set(_read(base / "cgroup.controllers").split())
            kind = "v2" if {"memory", "pids"} <= controllers else "unified"
            found.append(Hierarchy(kind, base))
        elif fstype == "cgroup":
            for controller in ("pids", "memory"):
                if controller in options and controller in own:
                    found.append(Hierarchy(controller, Path(mountpoint)
                                           / own[controller].lstrip("/")))
    return found


class TaskCgroup:
    """One task's directories, one per hierarchy."""

    def __init__(self, dirs: dict[str, Path]) -> None:
        self.dirs = dirs
        kill_dir = dirs.get("v2") or dirs.get("unified")
        self._kill_file = (kill_dir / "cgroup.kill"
                           if kill_dir is not None and (kill_dir / "cgroup.kill").exists()
                           else None)
        # Where membership is read: every hierarchy holds every task process.
        self._procs_dir = next(iter(dirs.values()), None)

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def pids(self) -> list[int]:
        """Live processes of the task (zombies have left ``cgroup.procs``)."""
        return _pids_in(self._procs_dir) if self._procs_dir is not None else []

    def signal(self, sig: int, except_session: int = 0) -> None:
        """``sig`` to every process of the task but those of session ``except_session``
        (the caller signals those through their group: once is enough); SIGKILL ends the
        cgroup as a whole."""
        if sig == signal.SIGKILL:
            self.kill()
            return
        for pid in self.pids():
            st = procgroup.proc_stat(pid)
            if st is None or (except_session and st.session == except_session):
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def kill(self) -> None:
        if self._kill_file is not None:
            with contextlib.suppress(OSError):
                self._kill_file.write_text("1")  # the kernel kills forkers too, no race
                return
        for _ in range(KILL_ROUNDS):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)

    def oom_kills(self) -> int:
        """How many of the task's processes the kernel killed at its memory limit."""
        for kind, name in (("v2", "memory.events"), ("memory", "memory.oom_control")):
            if kind in self.dirs:
                for line in _read(self.dirs[kind] / name).splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and value.strip().isdigit():
                        return int(value)
        return 0

    def pids_peak(self) -> int | None:
        """Most processes the task had at once, where the kernel counts it (pids.peak)."""
        for kind in ("v2", "pids"):
            if kind in self.dirs:
                text = _read(self.dirs[kind] / "pids.peak").strip()
                if text.isdigit():
                    return int(text)
        return None

    def remove(self) -> bool:
        """Remove the directories; False if one is still busy (a process is left)."""
        ok = True
        for d in self.dirs.values():
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                ok = False
        return ok


class CgroupTree:
    """The agent's directories (one per usable hierarchy) and its tasks' cgroups."""

    def __init__(self, agent_dirs: dict[str, Path]) -> None:
        self.agent_dirs = agent_dirs

    @property
    def mode(self) -> str:
        return CGROUP if self.agent_dirs else PROCESS_GROUP

    @property
    def layout(self) -> str:
        """What is used, for the start-up log: e.g. ``pids,memory,unified``."""
        return ",".join(self.agent_dirs) or "none"

    @property
    def limits_enforced(self) -> tuple[bool, bool]:
        """(memory, pids) limits can be applied."""
        kinds = set(self.agent_dirs)
        return bool(kinds & {"v2", "memory"}), bool(kinds & {"v2", "pids"})

    @classmethod
    def open(cls, log: Any, hierarchies: Iterable[Hierarchy] | None = None) -> "CgroupTree":
        """Make the agent's directory in every writable hierarchy; sweep dead agents'."""
        if hierarchies is None:
            hierarchies = discover(_read(Path("/proc/self/mounts")),
                                   _read(Path("/proc/self/cgroup")))
        name = f"{AGENT_DIR_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        dirs: dict[str, Path] = {}
        for h in hierarchies:
            sweep_dead_agents(h.own, h.kind, log)
            made = _make_agent_dir(h, name, log)
            if made is not None and made[0] not in dirs:
                dirs[made[0]] = made[1]
        if "v2" in dirs:  # a full v2 makes the v1 limits and the bare unified redundant
            for kind in ("pids", "memory", "unified"):
                if kind in dirs:
                    with contextlib.suppress(OSError):
                        dirs.pop(kind).rmdir()
        return cls(dirs)

    def create(self, name: str, limits: Limits) -> TaskCgroup | None:
        """A task's cgroups with its limits set; None in process-group mode."""
        if not self.agent_dirs:
            return None
        leaf = "task-" + _UNSAFE.sub("_", name)
        made: dict[str, Path] = {}
        try:
            for kind, agent_dir in self.agent_dirs.items():
                d = agent_dir / leaf
                try:
                    d.mkdir()
                except FileExistsError:
                    pass  # a leftover of this very attempt: reused after a kill
                except OSError as e:
                    raise CgroupError(f"cannot create cgroup {d}: {e.strerror}") from e
                made[kind] = d
            cg = TaskCgroup(made)
            cg.kill()
            _apply_limits(made, limits)
        except CgroupError:
            TaskCgroup(made).remove()
            raise
        return cg

    def close(self) -> None:
        """Remove the agent's directories, killing whatever is still in them."""
        for kind, agent_dir in self.agent_dirs.items():
            _remove_tree(agent_dir, kind)
        self.agent_dirs = {}


def _apply_limits(dirs: dict[str, Path], limits: Limits) -> None:
    if limits.memory_max_bytes > 0:
        if "v2" in dirs:
            _write(dirs["v2"] / "memory.max", str(limits.memory_max_bytes))
            if (dirs["v2"] / "memory.swap.max").exists():
                _write(dirs["v2"] / "memory.swap.max", "0")
        elif "memory" in dirs:
            _write(dirs["memory"] / "memory.limit_in_bytes", str(limits.memory_max_bytes))
            # Swap would let the task run past its limit; memsw is absent without
            # swap accounting, which is fine.
            if (dirs["memory"] / "memory.memsw.limit_in_bytes").exists():
                _write(dirs["memory"] / "memory.memsw.limit_in_bytes",
                       str(limits.memory_max_bytes))
    if limits.pids_max > 0:
        for kind in ("v2", "pids"):
            if kind in dirs:
                _write(dirs[kind] / "pids.max", str(limits.pids_max))
                break


def _make_agent_dir(h: Hierarchy, name: str, log: Any) -> tuple[str, Path] | None:
    agent_dir = h.own / name
    try:
        agent_dir.mkdir()
    except OSError as e:
        log.info("cgroup_hierarchy_unusable", kind=h.kind, path=str(h.own), error=e.strerror)
        return None
    if h.kind != "v2":
        return h.kind, agent_dir
    try:
        # Fails (EBUSY) where the agent's own cgroup holds processes and is not the root:
        # the "no internal processes" rule. The directory still serves to kill.
        _write(h.own / "cgroup.subtree_control", "+memory +pids")
        _write(agent_dir / "cgroup.subtree_control", "+memory +pids")
    except CgroupError as e:
        log.info("cgroup_controllers_unavailable", path=str(h.own), error=str(e))
        return "unified", agent_dir
    return "v2", agent_dir


def _remove_tree(agent_dir: Path, kind: str) -> None:
    try:
        children = [c for c in agent_dir.iterdir() if c.is_dir()]
    except OSError:
        return
    for child in children:
        TaskCgroup({kind: child}).kill()
        with contextlib.suppress(OSError):
            child.rmdir()
    with contextlib.suppress(OSError):
        agent_dir.rmdir()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_dead_agents(own: Path, kind: str, log: Any) -> int:
    """Remove the directories of agents that are gone (their tasks are killed first)."""
    count = 0
    try:
        entries = list(own.iterdir())
    except OSError:
        return 0
    for entry in entries:
        m = _AGENT_DIR.match(entry.name)
        if m is None or not entry.is_dir() or _pid_alive(int(m.group(1))):
            continue
        _remove_tree(entry, kind)
        count += 1
        log.warning("cgroup_swept", path=str(entry))
    return count


def open_isolation(choice: str, log: Any) -> CgroupTree | None:
    """The agent's cgroups per ``--isolation`` (``auto``, ``cgroup``, ``process-group``);
    None for process groups. Logs the mode once, with what it can enforce."""
    tree = None if choice == PROCESS_GROUP else CgroupTree.open(log)
    if tree is not None and tree.mode == PROCESS_GROUP:
        tree = None
    if tree is None and choice == CGROUP:
        raise CgroupError("--isolation cgroup: no cgroup hierarchy is writable here")
    memory, pids = tree.limits_enforced if tree else (False, False)
    log.info("isolation", mode=tree.mode if tree else PROCESS_GROUP,
             layout=tree.layout if tree else "none", memory_limits=memory, pids_limits=pids,
             kill="cgroup.kill" if tree and {"v2", "unified"} & set(tree.agent_dirs)
             else "procs" if tree else "process-group")
    return tree
