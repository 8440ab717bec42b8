"""What every child process of the supervisor shares: boot hand-shake and liveness.

A child reports to the supervisor over its pipe with msgpack maps
(``{"event": "ready", ...}`` or ``{"event": "boot_error", "message": ...,
"exit_code": ...}``) — never pickled objects or exceptions. A child exits on its
own when its parent is gone (``os.getppid()`` changed).
"""

import asyncio
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgpack

from cortex import logs


@dataclass(frozen=True, slots=True)
class RingPaths:
    """Names of one shard's channel: two rings and their wake-up FIFOs."""

    up: Path  # shard -> control
    down: Path  # control -> shard
    up_wake: Path  # read by control
    down_wake: Path  # read by the shard

    @classmethod
    def for_shard(cls, prefix: Path, shard: int) -> "RingPaths":
        base = f"{prefix}-s{shard}"
        return cls(Path(f"{base}-up.ring"), Path(f"{base}-down.ring"),
                   Path(f"{base}-up.wake"), Path(f"{base}-down.wake"))

    def all(self) -> tuple[Path, ...]:
        return (self.up, self.down, self.up_wake, self.down_wake)


def report(conn: Connection, event: str, **fields: Any) -> None:
    conn.send_bytes(msgpack.packb({"event": event, **fields}))


def read_report(conn: Connection) -> dict[str, Any]:
    msg = msgpack.unpackb(conn.recv_bytes(), raw=False)
    if not isinstance(msg, dict):
        raise ValueError("child report is not a map")
    return msg


def install_stop_signals(loop: asyncio.AbstractEventLoop, on_signal: Callable[[int], None]) -> None:
    """Record SIGTERM/SIGQUIT; the child's main loop decides what to do.

    SIGINT is ignored in children: a Ctrl-C in a terminal reaches the whole process
    group, and only the supervisor decides how the hub stops.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for sig in (signal.SIGTERM, signal.SIGQUIT):
        loop.add_signal_handler(sig, on_signal, sig)


async def watch_parent(parent_pid: int, on_orphaned: Callable[[], None],
                       interval_s: float = 1.0) -> None:
    log = logs.get()
    while True:
        await asyncio.sleep(interval_s)
        if os.getppid() != parent_pid:
            log.warning("parent_gone", parent_pid=parent_pid)
            on_orphaned()
            return
