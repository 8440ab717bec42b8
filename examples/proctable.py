"""What runs, listens and lingers on this machine, read from /proc and /dev/shm.

A process is named by (pid, start time): the start time (field 22 of
/proc/PID/stat) tells a process from a later one that reused its pid, so a
check or a cleanup never mistakes, or signals, someone else's process.
"""

import os
import signal
from collections.abc import Iterable
from pathlib import Path


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat), None if gone
    or a zombie; (pid, start time) names a process even after pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else int(fields[19])


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[1])


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def descendants(root: int) -> dict[int, int]:
    """Living descendants of ``root`` as {pid: start time}."""
    children: dict[int, list[int]] = {}
    for pid in all_pids():
        ppid = parent_pid(pid)
        if ppid is not None:
            children.setdefault(ppid, []).append(pid)
    found: dict[int, int] = {}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            st = start_time(child)
            if st is not None:
                found[child] = st
                stack.append(child)
    return found


def alive(processes: dict[int, int]) -> list[int]:
    """The pids of ``processes`` ({pid: start time}) that still run."""
    return [pid for pid, st in processes.items() if start_time(pid) == st]


def listening_ports() -> set[int]:
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def shm_segments() -> set[str]:
    try:
        return {name for name in os.listdir("/dev/shm") if name.startswith("cortex")}
    except FileNotFoundError:
        return set()


def processes_with_env(name: str, value: str) -> list[int]:
    """Processes whose environment has ``name=value``."""
    needle = f"{name}={value}".encode()
    found = []
    for pid in all_pids():
        try:
            if needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(pid)
        except OSError:
            continue
    return found


def signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name: state, ppid, pgrp, session, …"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def session_members(sid: int) -> dict[int, str]:
    """Living (non-zombie) processes of session ``sid``, with their command lines."""
    members = {}
    for pid in all_pids():
        fields = stat_fields(pid)
        if fields and fields[0] != "Z" and int(fields[3]) == sid:
            members[pid] = cmdline(pid)
    return members
