"""Child subreaper set-up and reaping of re-parented orphans (DESIGN.md §5).

With ``PR_SET_CHILD_SUBREAPER`` the agent, not init, inherits every process a task left
behind when its parent died (``(daemon &)`` double-forks). Such orphans are killed with
their task's group; this module reaps their zombies. Invariant: it never waits on a pid
the task runner waits on itself (``protected()``), and it only ever reaps a pid that is
already a zombie child of this process, so it cannot steal a status anyone else wants.
It wakes on SIGCHLD (the handler only sets an event) and, as a safety net, periodically.
"""

import asyncio
import contextlib
import ctypes
import os
import signal
from collections.abc import Callable, Collection
from typing import Any

from nodeagent import procgroup

PR_SET_CHILD_SUBREAPER = 36
SWEEP_INTERVAL_S = 5.0


def become_subreaper() -> bool:
    """Make this process the reaper of its descendants' orphans; False if refused."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def zombie_children(parent: int) -> list[int]:
    found = []
    for pid in procgroup.all_pids():
        st = procgroup.proc_stat(pid)
        if st is not None and st.ppid == parent and st.state == "Z":
            found.append(pid)
    return found


class OrphanReaper:
    def __init__(self, protected: Callable[[], Collection[int]], log: Any) -> None:
        self._protected = protected
        self._log = log
        self._wake = asyncio.Event()
        self.reaped = 0

    def reap(self) -> int:
        """Reap every zombie child that is not a task's main process; returns how many."""
        protected = self._protected()
        count = 0
        for pid in zombie_children(os.getpid()):
            if pid in protected:
                continue
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    count += 1
        if count:
            self.reaped += count
            self._log.debug("orphans_reaped", count=count)
        return count

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGCHLD, self._wake.set)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), SWEEP_INTERVAL_S)
                self._wake.clear()
                self.reap()
        finally:
            loop.remove_signal_handler(signal.SIGCHLD)
