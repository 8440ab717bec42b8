"""The supervisor's children as processes: spawn, the boot hand-shake, signals, joins.

Mechanism only (cortexd/supervisor.py holds the policy: what to restart, when to
halt). A :class:`Child` is one slot — the control process, a shard, a monitor
process — that outlives the processes spawned into it; restarts and crash times
belong to the slot. Messages from a child arrive as msgpack maps
(cortexd/childproc.py); :func:`await_event` waits for one of them while keeping
whatever else arrives for the loop.
"""

import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from cortexd import exitcodes
from cortexd.childproc import read_report
from cortexd.runtime import BootError

BOOT_TIMEOUT_S = 60.0


@dataclass(eq=False)
class Child:
    name: str
    shard: int | None  # None = the control process or a monitor
    proc: BaseProcess | None = None
    conn: Connection | None = None
    restarts: int = 0
    crash_times: deque[float] = field(default_factory=lambda: deque(maxlen=64))
    respawn_at: float | None = None
    last_beat: int = -1
    last_beat_change: float = 0.0
    monitor: int | None = None  # a monitor process: its index
    drained: bool = False  # a shard told to stop accepting (cortexd/shardset.py)
    #: Messages read while waiting for another one (await_event), for the loop.
    unread: deque[dict[str, Any]] = field(default_factory=deque)

    @property
    def pid(self) -> int:
        return self.proc.pid or 0 if self.proc is not None else 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()


def await_ready(child: Child, timeout_s: float = BOOT_TIMEOUT_S) -> None:
    """Wait for the child's ``ready``; a boot error or an early exit is a BootError."""
    assert child.proc is not None and child.conn is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready = wait([child.conn, child.proc.sentinel], timeout=1.0)
        if child.conn in ready:
            try:
                msg = read_report(child.conn)
            except (EOFError, OSError):
                msg = {"event": "died"}
            if msg["event"] == "ready":
                return
            if msg["event"] == "boot_error":
                raise BootError(f"{child.name}: {msg['message']}", int(msg["exit_code"]))
        if child.proc.sentinel in ready and not child.proc.is_alive():
            raise BootError(f"{child.name} exited with code {child.proc.exitcode} during "
                            "boot", exitcodes.BOOT_ERROR)
    raise BootError(f"{child.name} did not become ready within {timeout_s:.0f} s",
                    exitcodes.BOOT_ERROR)


def await_event(child: Child, event: str, timeout_s: float,
                tick: Callable[[], None] | None = None) -> dict[str, Any] | None:
    """The next ``event`` map from the child, or None (timeout, exit, closed pipe).
    Other maps read meanwhile go to ``child.unread``; ``tick`` is called about every
    second meanwhile (the supervisor's watchdog must not starve while it waits)."""
    deadline = time.monotonic() + timeout_s
    while child.conn is not None and child.proc is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        if tick is not None:
            tick()
        ready = wait([child.conn, child.proc.sentinel], timeout=min(left, 1.0))
        if child.conn in ready:
            try:
                msg = read_report(child.conn)
            except (EOFError, OSError, ValueError):
                return None
            if msg.get("event") == event:
                return msg
            child.unread.append(msg)
        elif child.proc.sentinel in ready and not child.proc.is_alive():
            return None
    return None


def read_pending(child: Child) -> list[dict[str, Any]]:
    """Every map the child sent that nobody read yet (without blocking)."""
    out = list(child.unread)
    child.unread.clear()
    while child.conn is not None:
        try:
            if not child.conn.poll():
                break
            out.append(read_report(child.conn))
        except (EOFError, OSError, ValueError):
            break
    return out


def signal_child(child: Child, sig: int) -> None:
    if child.proc is not None and child.proc.pid and child.proc.is_alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.proc.pid, sig)


def join(children: list[Child], deadline: float, skip: deque[int] | None = None,
         on_kill: Any = None) -> None:
    """Join each child by ``deadline``; SIGKILL whoever is left. A signal arriving in
    ``skip`` meanwhile moves the deadline to now (the ladder's forced step)."""
    for child in children:
        if child.proc is None:
            continue
        child.proc.join(max(0.0, deadline - time.monotonic()))
        if skip:
            deadline = time.monotonic()
        if child.proc.is_alive():
            if on_kill is not None:
                on_kill(child)
            child.proc.kill()
            child.proc.join(5)


def terminate(child: Child, grace_s: float) -> None:
    signal_child(child, signal.SIGTERM)
    join([child], time.monotonic() + grace_s)


def backoff(child: Child) -> float:
    recent = sum(1 for t in child.crash_times if time.monotonic() - t < 60)
    return min(30.0, 0.1 * 2.0 ** max(0, recent - 1))
