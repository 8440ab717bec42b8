"""Chromium's processes as /proc shows them: a session's browser and its renderers.

Playwright does not expose the pid of a persistent context's browser, so a session's
browser is found by its ``--user-data-dir`` (each session has its own), and its
renderers are its descendants started with ``--type=renderer``. Reading /proc is what
the memory cap (browserd/table.py) and the orphan sweep at start need; nothing here
signals a process it did not find under browserd's own state directory. A child forked
from Chromium's zygote rewrites its argv into one space-separated string, so flags of
those are matched in the joined command line.
"""

import os
import signal
from dataclasses import dataclass
from pathlib import Path

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class Proc:
    pid: int
    ppid: int
    cmdline: tuple[str, ...]


def processes() -> list[Proc]:
    out: list[Proc] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        # comm may hold spaces and parentheses: fields start after the last ')'
        fields = stat[stat.rfind(b")") + 2:].split()
        out.append(Proc(int(entry.name), int(fields[1]),
                        tuple(a.decode(errors="replace") for a in cmd.split(b"\0") if a)))
    return out


def browser_pid(procs: list[Proc], profile_dir: Path) -> int | None:
    flag = f"--user-data-dir={profile_dir}"
    for p in procs:
        if flag in p.cmdline and not any(a.startswith("--type=") for a in p.cmdline):
            return p.pid
    return None


def renderers(procs: list[Proc], root: int) -> list[int]:
    children: dict[int, list[Proc]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p)
    found: list[int] = []
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            stack.append(child.pid)
            # a zygote-forked child rewrites its argv into one string: match the text
            if "--type=renderer" in " ".join(child.cmdline):
                found.append(child.pid)
    return found


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def kill(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def kill_orphans(sessions_dir: Path) -> list[int]:
    """SIGKILL browsers left by a browserd that died (their profile is under our state dir)."""
    prefix = f"--user-data-dir={sessions_dir}/"
    killed = []
    for p in processes():
        if p.pid != os.getpid() and prefix in " ".join(p.cmdline):
            if kill(p.pid):
                killed.append(p.pid)
    return killed
