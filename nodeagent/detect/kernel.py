"""The kernel's word: is the PTY's foreground process group asleep reading the terminal?

Read from ``/proc`` only (no ptrace): the session leader's ``stat`` gives the terminal
(``tty_nr``) and its foreground process group (``tpgid``, what ``tcgetpgrp`` on the
master returns); the group's members are found by walking the session leader's
descendants (``/proc/PID/task/TID/children``), falling back to a scan of ``/proc``. A
member waits on the terminal when it is asleep (state ``S``) and ``/proc/PID/syscall``
shows ``read`` on a descriptor that is the terminal (``"read"``), or poll/select/pselect
with its stdin being the terminal (``"poll"``). Where ``syscall`` cannot be read, a
sleep in ``n_tty_read``/``wait_woken`` counts as ``"read"``.

Cost: a handful of small ``/proc`` reads per member; the caller asks only after output
has been quiet for the debounce, never per byte. Every read tolerates the process
vanishing meanwhile (the answer is then "not waiting").
"""

import contextlib
import os
import platform
import termios

from nodeagent.detect.events import KernelFacts

_ARCH = platform.machine()
# syscall numbers: read, and the waits that mean "waiting for input on some fd"
if _ARCH in ("aarch64", "arm64"):
    READ_NRS = frozenset({63})
    POLL_NRS = frozenset({72, 73, 22})  # pselect6, ppoll, epoll_pwait
else:  # x86_64
    READ_NRS = frozenset({0})
    POLL_NRS = frozenset({7, 23, 270, 271})  # poll, select, pselect6, ppoll
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
    pids = _descendants(session_pid)
    if not pids:
        pids = [int(n) for n in os.listdir("/proc") if n.isdigit()]
    found = []
    for pid in pids:
        st = _stat(pid)
        if st is not None and len(st) > 5 and st[2] == str(pgid):
            found.append((pid, st))
    return found


def _fd_is_tty(pid: int, fd: int, tty_nr: int) -> bool:
    path = f"/proc/{pid}/fd/{fd}"
    try:
        # /dev/tty (getpass, ssh, sudo open it) is the process's controlling terminal.
        return os.stat(path).st_rdev == tty_nr or os.readlink(path) == "/dev/tty"
    except (OSError, ValueError):
        return False


def _waiting(pid: int, state: str, tty_nr: int) -> tuple[str, str]:
    """("read" | "poll" | "", wchan) for one process."""
    if state != "S":
        return "", ""
    wchan = _read(f"/proc/{pid}/wchan") or ""
    sc = _read(f"/proc/{pid}/syscall")
    if sc is None or not sc.strip() or sc.startswith("running"):
        return ("read" if wchan in READ_WCHANS else ""), wchan
    parts = sc.split()
    try:
        nr = int(parts[0])
        arg0 = int(parts[1], 16) if len(parts) > 1 else -1
    except ValueError:
        return "", wchan
    if nr in READ_NRS and 0 <= arg0 < 1 << 20 and _fd_is_tty(pid, arg0, tty_nr):
        return "read", wchan
    if nr in POLL_NRS and _fd_is_tty(pid, 0, tty_nr):
        return "poll", wchan
    return "", wchan


def _echo(master_fd: int) -> bool | None:
    if master_fd < 0:
        return None
    with contextlib.suppress(OSError, termios.error):
        return bool(termios.tcgetattr(master_fd)[3] & termios.ECHO)
    return None


def read_facts(session_pid: int, master_fd: int = -1) -> KernelFacts:
    """What the kernel says now about the terminal of the session led by ``session_pid``."""
    leader = _stat(session_pid)
    if leader is None or len(leader) < 6:
        return KernelFacts("")
    tty_nr, tpgid = int(leader[4]), int(leader[5])
    if tty_nr == 0 or tpgid <= 0:
        return KernelFacts("")
    best = KernelFacts("")
    for pid, st in _members(session_pid, tpgid):
        how, wchan = _waiting(pid, st[0], tty_nr)
        if how == "read":
            return KernelFacts("read", pid, st[-1], wchan, _echo(master_fd))
        if how == "poll" and not best.waiting:
            best = KernelFacts("poll", pid, st[-1], wchan, _echo(master_fd))
    return best
