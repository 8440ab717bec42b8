"""Issue 9's targets, computed from one run's results and printed with their ratios.

Every ratio is between figures of the same run (same machine, same load). A figure
that is missing (its scenario was not run or failed) is reported as such, never
guessed. ``make bench-quick`` prints the table at the end; it is also stored in the
result file as ``targets``.
"""

from typing import Any

#: {"target", "value", "bound", "kind" ("min": at least the bound, "max": at most,
#: "figure": reported only), "met"}
Target = dict[str, Any]


def _get(data: dict[str, Any], *path: str) -> float | None:
    node: Any = data
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, int | float) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def targets(data: dict[str, Any]) -> list[Target]:
    steady = _get(data, "steady", "tasks_per_s")
    rows: list[Target] = [
        {"target": "steady 1,000 nodes ≥ 0.25× ceiling (goal 0.5×)",
         "value": _ratio(steady, _get(data, "ceiling", "tasks_per_s")), "bound": 0.25,
         "kind": "min"},
        {"target": "steady 1,000 nodes ≥ 3× Celery peer (goal 10×)",
         "value": _ratio(steady, _get(data, "peer", "tasks_per_s")), "bound": 3.0,
         "kind": "min"},
        {"target": "single-task p50 / Celery single p50 ≤ 1.0",
         "value": _ratio(_get(data, "steady", "single", "p50_ms"),
                         _get(data, "peer", "single", "p50_ms")), "bound": 1.0, "kind": "max"},
        {"target": "p99 at half the max rate ≤ 10 ms",
         "value": _get(data, "steady", "fixed_rate", "p99_ms"), "bound": 10.0, "kind": "max"},
        {"target": "hub CPU per task ≤ 350 µs (all hub processes, /proc)",
         "value": _get(data, "steady", "hub_cpu_us_per_task"), "bound": 350.0, "kind": "max"},
        {"target": "control process CPU per task ≤ 150 µs (the one serial process)",
         "value": _get(data, "steady", "hub_cpu_us_per_task_by_process", "control"),
         "bound": 150.0, "kind": "max"},
    ]
    if "steady_submit_many" in data:
        rows.append({"target": "SubmitMany steady, tasks/s (ratio to Submit steady)",
                     "value": _get(data, "steady_submit_many", "tasks_per_s"),
                     "ratio": _ratio(_get(data, "steady_submit_many", "tasks_per_s"), steady),
                     "bound": None, "kind": "figure"})
    if "steady_pg" in data:
        rows.append({"target": "steady on PostgreSQL, ratio to SQLite",
                     "value": _ratio(_get(data, "steady_pg", "tasks_per_s"), steady),
                     "bound": None, "kind": "figure"})
    if "steady_10000" in data:
        rows.append({"target": "CPU per task 10,000 / 1,000 nodes ≤ 1.2",
                     "value": _ratio(_get(data, "steady_10000", "hub_cpu_us_per_task"),
                                     _get(data, "steady", "hub_cpu_us_per_task")),
                     "bound": 1.2, "kind": "max"})
        rows.append({"target": "single p50 10,000 / 1,000 nodes ≤ 1.2",
                     "value": _ratio(_get(data, "steady_10000", "single", "p50_ms"),
                                     _get(data, "steady", "single", "p50_ms")),
                     "bound": 1.2, "kind": "max"})
    for row in rows:
        v, bound = row["value"], row["bound"]
        if v is None:
            row["met"] = None
        elif bound is None:
            row["met"] = None
        else:
            row["met"] = v >= bound if row["kind"] == "min" else v <= bound
    return rows


def render(rows: list[Target]) -> str:
    lines = ["issue 9 targets (ratios within this run):"]
    for r in rows:
        v = "missing" if r["value"] is None else f"{r['value']:g}"
        extra = f" (×{r['ratio']:g} of Submit)" if r.get("ratio") is not None else ""
        verdict = {True: "met", False: "MISSED", None: ""}[r["met"]]
        lines.append(f"  {r['target']}: {v}{extra} {verdict}".rstrip())
    return "\n".join(lines)


def sizing(data: dict[str, Any], cores: tuple[int, ...] = (4, 16, 64)) -> list[dict[str, Any]]:
    """Tasks/s one hub host of N cores can carry, from this run's CPU per task by process.

    The control process is one process: it caps the host at 1e6 / control µs tasks/s
    whatever the cores. The shards' part spreads over the other cores (shards are
    added with cores; their CPU per task was measured flat from 1 to 2 shards). The
    fleet and load generator are not counted: on a real host they are elsewhere.
    """
    by = (data.get("steady") or {}).get("hub_cpu_us_per_task_by_process")
    if not by or not by.get("control"):
        return []
    control = float(by["control"])
    rest = float(by["hub"]) - control
    rows = []
    for n in cores:
        cap_control = 1e6 / control
        cap_rest = (n - 1) * 1e6 / rest if rest > 0 else float("inf")
        rows.append({"cores": n, "tasks_per_s": round(min(cap_control, cap_rest)),
                     "limited_by": "control process" if cap_control <= cap_rest else "shards"})
    return rows
