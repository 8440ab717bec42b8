"""The kernel's word: is the PTY's foreground process group asleep reading the terminal?

Read from ``/proc`` only (no ptrace): the session leader's ``stat`` gives the terminal
(``tty_nr``) and its foreground process group (``tpgid``, what ``tcgetpgrp`` on the
master returns); the group's members are found by walking the session leader's
descendants (``/proc/PID/task/TID/children``), falling back to a scan of ``/proc``; a
descendant that left the session (``su -c`` calls ``setsid``) counts too. A
member waits on the terminal when it is asleep (state ``S``) and ``/proc/PID/syscall``
shows ``read`` on a descriptor that is the terminal (``"read"``), or poll/select/pselect
with its stdin being the terminal (``"poll"``). Where ``syscall`` cannot be read, a
sleep in ``n_tty_read``/``wait_woken`` counts as ``"read"``.

The decision (:func:`waiting`, :func:`decide`) is pure over :class:`Member` records, so a
replay feeds recorded facts (:func:`facts_from_record`, ``nodeagent detect --kernel``)
through the same rule the live reads (:func:`read_facts`) go through.

Cost: a handful of small ``/proc`` reads per member; the caller asks only after output
has been quiet for the debounce, never per byte. Every read tolerates the process
vanishing meanwhile (the answer is then "not waiting").
"""

import contextlib
import os
import platform
import termios
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nodeagent.detect.events import KernelFacts

_ARCH = platform.machine()
# syscall numbers: read, and the waits that mean "waiting for input on some fd"
if _ARCH in ("aarch64", "arm64"):
    READ_NRS = frozenset({63})
    POLL_NRS = frozenset({72, 73, 22})  # pselect6, ppoll, epoll_pwait
else:  # x86_64
    READ_NRS = frozenset({0})
    # poll, select, pselect6, ppoll, epoll_wait, epoll_pwait (node's event loop)
    POLL_NRS = frozenset({7, 23, 270, 271, 232, 281})
READ_WCHANS = frozenset({"n_tty_read", "wait_woken"})
MAX_MEMBERS = 256


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("ascii", "replace")
    except OSError:
        return None


def _stat(pid: int) -> list[str] | None:
    """Fields after ``comm`` (index 0 = state), with comm appended; None when gone."""
    raw = _read(f"/proc/{pid}/stat")
    if raw is None:
        return None
    close = raw.rfind(")")
    return [*raw[close + 2:].split(), raw[raw.find("(") + 1:close]]


def _descendants(root: int) -> list[int]:
    out: list[int] = []
    todo, seen = [root], {root}
    while todo and len(out) < MAX_MEMBERS:
        pid = todo.pop()
        out.append(pid)
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            kids = _read(f"/proc/{pid}/task/{tid}/children")
            if kids is None:
                return []  # no CONFIG_PROC_CHILDREN: the caller scans /proc
            for k in kids.split():
                child = int(k)
                if child not in seen:
                    seen.add(child)
                    todo.append(child)
    return out


def _members(session_pid: int, pgid: int) -> list[tuple[int, list[str]]]:
    """The foreground group's processes, and descendants that left the session (``su -c``
    and ``setsid`` start a new one, yet may still read the terminal they inherited)."""
    pids = _descendants(session_pid)
    left_ok = bool(pids)  # only a walk of our own descendants may add those
    if not pids:
        pids = [int(n) for n in os.listdir("/proc") if n.isdigit()]
    found = []
    for pid in pids:
        st = _stat(pid)
        if st is not None and len(st) > 5 and (
                st[2] == str(pgid) or (left_ok and st[3] != str(session_pid))):
            found.append((pid, st))
    return found


def _fd_is_tty(pid: int, fd: int, tty_nr: int) -> bool:
    path = f"/proc/{pid}/fd/{fd}"
    try:
        # /dev/tty (getpass, ssh, sudo open it) is the process's controlling terminal.
        return os.stat(path).st_rdev == tty_nr or os.readlink(path) == "/dev/tty"
    except (OSError, ValueError):
        return False


@dataclass(frozen=True, slots=True)
class Member:
    """One process of the foreground group, as the decision needs it (live or recorded).

    ``syscall`` is the text of ``/proc/PID/syscall`` (or just the number, or None when
    unreadable); ``fd_is_tty(fd)`` says whether that descriptor is the terminal — asked
    only for the descriptor the decision needs, so the live path stays a few reads.
    """

    pid: int
    comm: str
    state: str
    wchan: str
    syscall: str | None
    fd_is_tty: Callable[[int], bool]


def waiting(m: Member) -> str:
    """"read" | "poll" | "" for one member: the one rule, live and in a replay."""
    if m.state != "S":
        return ""
    sc = m.syscall
    if sc is None or not sc.strip() or sc.startswith("running"):
        return "read" if m.wchan in READ_WCHANS else ""
    parts = sc.split()
    try:
        nr = int(parts[0])
        # A record with just the number: the read is taken to be on stdin.
        arg0 = int(parts[1], 16) if len(parts) > 1 else 0
    except ValueError:
        return ""
    if nr in READ_NRS and 0 <= arg0 < 1 << 20 and m.fd_is_tty(arg0):
        return "read"
    if nr in POLL_NRS and m.fd_is_tty(0):
        return "poll"
    return ""


def decide(members: Iterable[Member], echo: bool | None = None) -> KernelFacts:
    """The kernel's word from the foreground group's members: a reader wins, else a poller."""
    best = KernelFacts("")
    for m in members:
        how = waiting(m)
        if how == "read":
            return KernelFacts("read", m.pid, m.comm, m.wchan, echo)
        if how == "poll" and not best.waiting:
            best = KernelFacts("poll", m.pid, m.comm, m.wchan, echo)
    return best


def _echo(master_fd: int) -> bool | None:
    if master_fd < 0:
        return None
    with contextlib.suppress(OSError, termios.error):
        return bool(termios.tcgetattr(master_fd)[3] & termios.ECHO)
    return None


def _live_members(session_pid: int) -> list[Member] | None:
    leader = _stat(session_pid)
    if leader is None or len(leader) < 6:
        return None
    tty_nr, tpgid = int(leader[4]), int(leader[5])
    if tty_nr == 0 or tpgid <= 0:
        return None
    out = []
    for pid, st in _members(session_pid, tpgid):
        live = st[0] == "S"
        out.append(Member(
            pid, st[-1], st[0], (_read(f"/proc/{pid}/wchan") or "") if live else "",
            _read(f"/proc/{pid}/syscall") if live else None,
            lambda fd, pid=pid: _fd_is_tty(pid, fd, tty_nr)))  # type: ignore[misc]
    return out


def read_facts(session_pid: int, master_fd: int = -1) -> KernelFacts:
    """What the kernel says now about the terminal of the session led by ``session_pid``."""
    members = _live_members(session_pid)
    if members is None:
        return KernelFacts("")
    facts = decide(members)
    return facts if not facts.waiting else KernelFacts(
        facts.waiting, facts.pid, facts.comm, facts.wchan, _echo(master_fd))


# ---- recorded facts (``nodeagent detect --kernel FILE.json``) -------------------

TTY_LINKS = ("/dev/pts/", "/dev/tty")


def _recorded_fd_is_tty(fds: Mapping[str, str]) -> Callable[[int], bool]:
    def is_tty(fd: int) -> bool:
        target = str(fds.get(str(fd), ""))
        return target.startswith(TTY_LINKS) and not target.startswith("/dev/ttyS")
    return is_tty


def facts_from_record(record: Mapping[str, Any]) -> KernelFacts:
    """The kernel's word from a recorded ``{"members": [{comm, state, wchan, syscall,
    fds}]}`` (what /proc showed of the foreground group), through :func:`decide`."""
    members = []
    for i, raw in enumerate(record.get("members", ())):
        sc = raw.get("syscall")
        members.append(Member(
            int(raw.get("pid", i + 1)), str(raw.get("comm", "")), str(raw.get("state", "")),
            str(raw.get("wchan", "")), None if sc is None else str(sc),
            _recorded_fd_is_tty({str(k): str(v) for k, v in (raw.get("fds") or {}).items()})))
    echo = record.get("echo")
    return decide(members, echo if isinstance(echo, bool) else None)


def snapshot(session_pid: int) -> dict[str, Any]:
    """A record of the foreground group now, in the ``--kernel`` file's shape (capture)."""
    leader = _stat(session_pid)
    if leader is None or len(leader) < 6:
        return {"members": []}
    members = []
    for pid, st in _members(session_pid, int(leader[5])):
        fds = {}
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    fds[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
        members.append({"comm": st[-1], "state": st[0],
                        "wchan": _read(f"/proc/{pid}/wchan") or "",
                        "syscall": (_read(f"/proc/{pid}/syscall") or "").strip(), "fds": fds})
    return {"members": members}
