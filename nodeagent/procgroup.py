"""Signalling and inspecting one task's processes (DESIGN.md §5, "nothing orphaned").

A task's shell is a session leader (``setsid`` by the PTY fork), so its pid is both the
process group id and the session id of the task. Everything the task started is reached
through either: the process group (a plain ``sh -c`` without job control keeps every
child, background or not, in it) or the session (a job-control shell inside the task puts
its jobs in new groups of the same session). A process that calls ``setsid`` itself
escapes both; only a cgroup would hold it (not done yet).

Pid reuse: the caller keeps the task's main process unreaped (a zombie) while it kills
leftovers, so the group and session ids cannot name another process meanwhile.
"""

import asyncio
import contextlib
import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    state: str
    ppid: int
    pgrp: int
    session: int
    start_ticks: int


def proc_stat(pid: int) -> ProcStat | None:
    """Parse ``/proc/<pid>/stat``; None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # comm (field 2) is in parentheses and may itself contain ") ", so split at the last.
    rest = raw[raw.rfind(")") + 2:].split()
    try:
        return ProcStat(pid=pid, state=rest[0], ppid=int(rest[1]), pgrp=int(rest[2]),
                        session=int(rest[3]), start_ticks=int(rest[19]))
    except (IndexError, ValueError):
        return None


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def live_members(pgid: int, sid: int | None = None) -> list[int]:
    """Pids that are alive (not zombies) in process group ``pgid`` or session ``sid``."""
    found = []
    for pid in all_pids():
        st = proc_stat(pid)
        if st is None or st.state in ("Z", "X"):
            continue
        if st.pgrp == pgid or (sid is not None and st.session == sid):
            found.append(pid)
    return found


def signal_task(pgid: int, sig: int, sid: int | None = None) -> None:
    """Send ``sig`` to the whole group, then to session members outside the group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    if sid is None:
        return
    for pid in live_members(-1, sid):
        st = proc_stat(pid)
        if st is not None and st.pgrp != pgid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


async def wait_gone(pids: list[int], timeout_s: float) -> bool:
    """Wait until every pid in ``pids`` has exited (pidfd readiness, no polling).

    Returns False on timeout. Works for processes that are not our children too: a
    pidfd becomes readable when the process exits.
    """
    loop = asyncio.get_running_loop()
    waits: list[tuple[int, asyncio.Future[None]]] = []
    try:
        for pid in pids:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            fut: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _resolve, fut)
            waits.append((fd, fut))
        if not waits:
            return True
        _, pending = await asyncio.wait([f for _, f in waits], timeout=timeout_s)
        return not pending
    finally:
        for fd, fut in waits:
            loop.remove_reader(fd)
            os.close(fd)
            fut.cancel()


def _resolve(fut: "asyncio.Future[None]") -> None:
    if not fut.done():
        fut.set_result(None)
