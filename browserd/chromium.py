"""Chromium's processes as /proc shows them: a session's browser and its renderers.

Playwright does not expose the pid of a persistent context's browser, so a session's
browser is found by its ``--user-data-dir`` (each session has its own), and its
renderers are its descendants started with ``--type=renderer``. Reading /proc is what
the memory cap (browserd/table.py) and the orphan sweep at start need; nothing here
signals a process it did not find under browserd's own state directory. A child forked
from Chromium's zygote rewrites its argv into one space-separated string, so flags of
those are matched in the joined command line.

Warm browsers are launched niced (:func:`nice_wrapper`): a launch costs ~1.5 s of CPU
(measured here), and at full weight it halved the speed of the session that had just
taken the previous warm browser. Playwright starts each browser in its own session (a
new scheduler autogroup), and Chromium resets its threads' own nice values when it may
(root), so the nice is set on the browser's autogroup (/proc/PID/autogroup), which
weighs the whole tree against other groups; the session that takes a warm browser sets
it back to 0 (:func:`set_autogroup_nice`). Lowering a nice needs CAP_SYS_NICE or
RLIMIT_NICE (:func:`can_unnice`) and autogroups must be on: without either, warm
launches are not niced at all, rather than leave a session slow.

A browser is not done starting when Playwright's launch returns: its tree goes on using
CPU for 0.2–0.8 s more over the next 0.5–3 s (measured here under load, niced and not:
profile, GPU and utility processes finishing their start). A session handed such a
browser pays for that on its first calls, so the pool (browserd/table.py) watches
:func:`tree_busy_ms` until the tree is quiet before it calls a warm browser settled.
"""

import os
import resource
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


def descendants(procs: list[Proc], root: int) -> list[Proc]:
    children: dict[int, list[Proc]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p)
    found: list[Proc] = []
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            stack.append(child.pid)
            found.append(child)
    return found


def renderers(procs: list[Proc], root: int) -> list[int]:
    # a zygote-forked child rewrites its argv into one string: match the text
    return [p.pid for p in descendants(procs, root) if "--type=renderer" in " ".join(p.cmdline)]


AUTOGROUP_SWITCH = Path("/proc/sys/kernel/sched_autogroup_enabled")


def can_unnice() -> bool:
    """Can warm browsers run niced and be set back to 0 (autogroups on; root or RLIMIT_NICE)?"""
    try:
        if AUTOGROUP_SWITCH.read_text().strip() != "1":
            return False
    except OSError:
        return False
    soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    return os.geteuid() == 0 or soft == resource.RLIM_INFINITY or soft >= 20


def nice_wrapper(directory: Path, chromium: Path, nice: int) -> Path:
    """An executable that runs ``chromium`` with its autogroup at ``nice`` (exec: the pid
    stays Chromium's; a kernel without autogroups runs it as it is)."""
    path = directory / f"chromium-nice-{nice}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f'#!/bin/sh\necho {int(nice)} > /proc/self/autogroup 2>/dev/null\n'
                   f'exec "{chromium}" "$@"\n')
    tmp.chmod(0o700)
    tmp.replace(path)
    return path


def set_pid_autogroup_nice(pid: int, nice: int = 0) -> bool:
    """One write to /proc (no scan): the nice of ``pid``'s autogroup, its whole tree."""
    try:
        Path(f"/proc/{pid}/autogroup").write_text(f"{int(nice)}\n")
    except OSError:
        return False
    return True


def set_autogroup_nice(profile_dir: Path, nice: int = 0) -> int | None:
    """Set the nice of the autogroup of the browser on ``profile_dir``; its pid, or None
    when it is not found or the write is refused."""
    root = browser_pid(processes(), profile_dir)
    if root is None or not set_pid_autogroup_nice(root, nice):
        return None
    return root


def tree_schedstat_ms(root: int) -> tuple[float, float]:
    """(on-CPU, run-queue) time of ``root`` and its descendants' threads so far, in ms
    (``/proc/PID/task/TID/schedstat``)."""
    run = wait = 0
    for pid in [root, *(p.pid for p in descendants(processes(), root))]:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                    r, w = f.read().split()[:2]
            except (OSError, ValueError):
                continue
            run, wait = run + int(r), wait + int(w)
    return run / 1e6, wait / 1e6


def tree_busy_ms(root: int) -> float:
    """Time the tree's threads have run or waited to run so far, in ms. Waiting counts: a
    niced tree starved on a loaded machine is still busy starting, not quiet."""
    return sum(tree_schedstat_ms(root))


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
