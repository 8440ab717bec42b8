"""The supervisor's side of systemd: ``WATCHDOG=1`` and the SIGHUP reload.

- The watchdog pings (at half ``WatchdogSec=``, cortexd/watchdog.py) only while the
  control process and every shard advance their ring heartbeats within
  ``child_timeout_s`` and no child is being respawned; a hung control process stops
  them and systemd restarts the unit.
- SIGHUP: ``RELOADING=1``, the settings read again, what can change live applied in
  the supervisor and sent to the control process and the shards (cortexd/reload.py),
  what needs a restart named, ``READY=1``. No node stream is touched.
"""

import contextlib
import time
from types import ModuleType
from typing import TYPE_CHECKING

from cortex import logs
from cortex.errors import ConfigError
from cortexd.childproc import report
from cortexd.reload import plan as reload_plan
from cortexd.runtime import sd_notify

if TYPE_CHECKING:
    from cortexd.supervisor import Supervisor


def metrics() -> ModuleType:
    from cortexd.supervisor import metrics as hub_metrics

    return hub_metrics()


def children_alive(sup: "Supervisor", now: float) -> bool:
    """Control and every shard beat their rings within child_timeout_s; monitors live."""
    control = sup.control
    if control.proc is None or not control.proc.is_alive() or not sup.ring_objs:
        return False
    beat = sup.ring_objs[1].producer_heartbeat  # control beats its down rings
    if beat != control.last_beat:
        control.last_beat, control.last_beat_change = beat, now
    elif now - control.last_beat_change > sup.s.child_timeout_s:
        return False
    return all(c.respawn_at is None and c.proc is not None and c.proc.is_alive()
               and now - c.last_beat_change <= sup.s.child_timeout_s
               for c in sup.shards) and all(
        c.respawn_at is None and c.proc is not None and c.proc.is_alive()
        for c in sup.monitors)

def watchdog_tick(sup: "Supervisor") -> None:
    now = time.monotonic()
    if sup.watchdog is None or not sup.watchdog.due(now):
        return
    was_withheld = sup.watchdog.withheld
    if sup.watchdog.decide(now, children_alive(sup, now)):
        sd_notify("WATCHDOG=1")
        metrics().WATCHDOG_PINGS.labels(sup.s.host_id).inc()
        if was_withheld:
            sup.log.info("watchdog_resumed")
    elif not was_withheld:
        sup.log.error("watchdog_withheld", note="a child is not alive or not beating; "
                       "systemd restarts the unit after WatchdogSec=")

def reload(sup: "Supervisor") -> None:
    """SIGHUP: apply what can change live, name what needs a restart (cortexd/reload.py)."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    sd_notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")
    try:
        if sup.reread is None:
            raise ConfigError("this cortexd was not started from a configuration to re-read")
        change = reload_plan(sup.loaded, sup.reread())
    except ConfigError as e:
        sup.log.error("reload_failed", message=str(e), note="the running settings stay")
        metrics().RELOADS.labels(sup.s.host_id, "failed").inc()
        sd_notify("READY=1")
        return
    sup.s = change.apply(sup.s)
    sup.loaded = change.apply(sup.loaded)
    logs.set_level(sup.s.log_level)
    for child in (sup.control, *sup.shards):
        if child.conn is not None:
            with contextlib.suppress(OSError):
                report(child.conn, "reload", settings=sup.s.to_dict())
    sup.log.info("reloaded", applied=sorted(change.applied), tokens="re-read",
                  needs_restart=list(change.needs_restart))
    metrics().RELOADS.labels(sup.s.host_id,
                             "partial" if change.needs_restart else "ok").inc()
    sd_notify("READY=1")

