"""What a SIGHUP reload may change without a restart, as a pure rule.

The supervisor re-reads the configuration (file, environment, the original flags),
compares it with what it loaded before, applies the settings named in
:data:`RELOADABLE` to every child (over its pipe, ``{"event": "reload", ...}``)
and names the others in the log as needing a restart. Credentials are re-read
on every reload (the ``tokens`` file), whatever changed, so a re-enrolled or
revoked credential takes effect at once, and so are the monitor policy files
(``monitor_policy_files``, cortexd/control/policyfiles.py), which may change while
the setting does not. Node streams are not touched.
"""

from dataclasses import dataclass, fields, replace
from typing import Any

from cortexd.config import Settings

#: Read at the moment of use by the control process or the shards.
RELOADABLE = frozenset({
    "log_level", "max_queued_tasks", "max_watchers", "max_attempts", "admit_per_s",
    "max_pending_attaches", "node_grace_s", "attach_timeout_s", "heartbeat_interval_ms",
    "max_heartbeats_per_s", "envelope_ttl_ms", "queue_scan_s", "max_restarts_per_minute",
    "child_timeout_s", "shutdown_grace_s", "monitor_policy_files",
})


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    applied: dict[str, Any]  # reloadable settings that changed: name -> new value
    needs_restart: tuple[str, ...]  # changed settings a reload cannot apply

    def apply(self, current: Settings) -> Settings:
        return replace(current, **self.applied)


def plan(loaded: Settings, reread: Settings) -> ReloadPlan:
    """Compare the settings loaded before with the ones just re-read."""
    changed = [f.name for f in fields(Settings)
               if getattr(loaded, f.name) != getattr(reread, f.name)]
    return ReloadPlan({n: getattr(reread, n) for n in changed if n in RELOADABLE},
                      tuple(n for n in changed if n not in RELOADABLE))
