"""Hub CPU by process kind (supervisor, control, shards) from /proc, for CPU per task.

The hub's processes are read from its ready file (``cortexd.json``: the control pid and
each shard's pid); whatever else runs under the supervisor (none today) counts as
``other``. Figures are clock ticks; :func:`per_task_us` turns a difference into µs of
CPU per task, one figure per kind plus each shard on its own.
"""

from typing import Any

from bench.harness import TICKS_PER_S, Bench, cpu_ticks, descendants


def hub_kinds(b: Bench) -> dict[str, list[int]]:
    info = b.hub.read_info()
    proc = b.hub.proc
    supervisor = [proc.pid] if proc is not None else []
    shards = {f"shard_{s['shard']}": [int(s["pid"])] for s in info["shards"]}
    known = {*supervisor, int(info["control_pid"]), *(p for v in shards.values() for p in v)}
    rest = [p for p in (descendants(proc.pid) if proc is not None else []) if p not in known]
    return {"supervisor": supervisor, "control": [int(info["control_pid"])], **shards,
            "other": rest}


def snapshot(kinds: dict[str, list[int]]) -> dict[str, int]:
    return {kind: cpu_ticks(pids) for kind, pids in kinds.items()}


def per_task_us(before: dict[str, int], after: dict[str, int], tasks: int) -> dict[str, Any]:
    """µs of CPU per task for each kind; ``shards`` sums the shards, ``hub`` everything."""
    us = {k: round((after.get(k, 0) - v) / TICKS_PER_S * 1e6 / max(1, tasks), 1)
          for k, v in before.items()}
    shards = [v for k, v in us.items() if k.startswith("shard_")]
    us["shards"] = round(sum(shards), 1)
    us["hub"] = round(sum(v for k, v in us.items() if k != "shards"), 1)
    return us


class PhaseMeter:
    """One phase's CPU per task: the hub's by process kind (as :func:`per_task_us`), the
    simulated fleet's (its processes share the machine's cores with the hub, so a dearer
    fleet slows the hub's latency without costing the hub CPU), and the heartbeats the
    fleet sent meanwhile (each costs the hub a message in and one out: a phase right after
    a big attach sees more of them than the fleet's steady rate, see bench/README.md)."""

    def __init__(self, b: Bench) -> None:
        self.b = b
        self.kinds = hub_kinds(b)
        self.fleet_pids = [p.pid for p in b.fleets]
        self.by_kind0 = snapshot(self.kinds)
        self.fleet0 = cpu_ticks(self.fleet_pids)
        self.beats0 = b.heartbeats()

    def per_task(self, tasks: int) -> dict[str, Any]:
        fleet = cpu_ticks(self.fleet_pids) - self.fleet0
        return {"hub_cpu_us_per_task_by_process": per_task_us(self.by_kind0,
                                                              snapshot(self.kinds), tasks),
                "fleet_cpu_us_per_task": round(fleet / TICKS_PER_S * 1e6 / max(1, tasks), 1),
                "heartbeats": self.b.heartbeats() - self.beats0}
