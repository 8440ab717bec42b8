"""systemd's watchdog, the supervisor's side: when to send ``WATCHDOG=1``.

systemd sets ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``) from the unit's
``WatchdogSec=``. The supervisor pings at half that interval, and only while
every child proves it lives (the control process and each shard advance their
ring heartbeats; a shard being respawned does not). A hung control process
therefore stops the pings and systemd restarts the unit, where the supervisor
alone could not tell a hang from a slow moment. Pure: the caller passes the
clock and the children's state.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass


def interval_s(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """The ping interval (half of WatchdogSec=), or None when the watchdog is off."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    owner = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None  # meant for another process
    return int(usec) / 2e6


@dataclass(slots=True)
class Watchdog:
    interval_s: float
    next_at: float = 0.0
    withheld: bool = False  # the last due ping was withheld (a child not alive)

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def decide(self, now: float, children_alive: bool) -> bool:
        """True: send WATCHDOG=1 now. Call when :meth:`due`."""
        self.withheld = not children_alive
        if children_alive:
            self.next_at = now + self.interval_s
        return children_alive
