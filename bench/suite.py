"""``make bench`` / ``make bench-quick``: every scenario in one run, one result file, a plot.

    python -m bench.suite full     # all scenarios, sized to finish within 15 minutes here
    python -m bench.suite quick    # steady at 1,000 nodes, ceiling, peer, SubmitMany: ~3 min

Each scenario runs as its own ``python -m bench.scenarios`` process (a crash or a leak in
one does not skew the next) with a time bound taken from what is left of the suite's
budget. Figures are merged into a scratch file and only at the end replace
``bench/results/latest.json`` (with a ``suite`` object: mode, wall time per scenario, load
average) and ``latest.png``, so a run that fails half-way, or a single scenario someone
runs meanwhile, never leaves a half-merged file behind.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import RESULTS, loadavg
from bench.targets import render, sizing, targets

Step = tuple[str, list[str]]

QUICK: list[Step] = [
    ("ceiling", ["ceiling", "--nodes", "1000", "--fleets", "2", "--seconds", "5"]),
    ("steady", ["steady", "--nodes", "1000", "--fleets", "2", "--tasks", "3000",
                "--fixed-s", "5", "--single", "100"]),
    ("peer", ["peer", "--tasks", "3000", "--concurrency", "256", "--single", "100"]),
    ("steady_submit_many", ["steady", "--nodes", "1000", "--fleets", "2", "--tasks", "3000",
                            "--fixed-s", "0", "--single", "0", "--submit-many", "100",
                            "--name", "steady_submit_many"]),
]

FULL: list[Step] = [
    *QUICK[:1],
    # Both measured after the same settle (the heartbeat rate at its steady 200/s: a node
    # attached while the fleet was small beats once at a shorter interval first), so the
    # 10,000 / 1,000 ratios compare the fleet sizes, not the attach's tail (README).
    ("steady", ["steady", "--nodes", "1000", "--fleets", "2", "--tasks", "5000",
                "--fixed-s", "10", "--single", "200", "--settle-s", "45"]),
    ("peer", ["peer", "--tasks", "5000", "--concurrency", "256", "--single", "200"]),
    ("steady_100", ["steady", "--nodes", "100", "--fleets", "1", "--tasks", "5000",
                    "--fixed-s", "10", "--single", "200", "--name", "steady_100"]),
    ("steady_10000", ["steady", "--nodes", "10000", "--fleets", "4", "--tasks", "5000",
                      "--fixed-s", "10", "--single", "100", "--settle-s", "45",
                      "--name", "steady_10000"]),
    QUICK[3],
    ("steady_pg", ["steady", "--nodes", "1000", "--fleets", "2", "--tasks", "3000",
                   "--fixed-s", "0", "--single", "100", "--store", "postgresql",
                   "--name", "steady_pg"]),
    ("shards", ["shards", "--nodes", "1000", "--fleets", "2", "--tasks", "3000",
                "--shard-counts", "1", "2", "4"]),
    ("hold", ["hold", "--nodes", "10000", "--fleets", "4", "--seconds", "20"]),
    ("flood", ["flood", "--tasks", "1000", "--nodes", "100", "--fleets", "2",
               "--seconds", "60", "--drain-s", "90"]),
]

BUDGET_S = {"quick": 240.0, "full": 1000.0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["quick", "full"])
    p.add_argument("--only", nargs="*", help="run only these steps (by name)")
    args = p.parse_args()
    steps = QUICK if args.mode == "quick" else FULL
    if args.only:
        steps = [s for s in steps if s[0] in args.only]
    budget = BUDGET_S[args.mode]
    scratch = Path(tempfile.mkdtemp(prefix="cortex-bench-suite-")) / "latest.json"
    started = time.monotonic()
    timings: dict[str, float] = {}
    failed: dict[str, str] = {}
    load0 = loadavg()
    for name, argv in steps:
        left = budget - (time.monotonic() - started)
        if left < 20:
            failed[name] = "skipped: the suite's time budget is spent"
            continue
        t0 = time.monotonic()
        print(f"== {name}: {' '.join(argv)} (budget left {left:.0f} s)", flush=True)
        cmd = [sys.executable, "-m", "bench.scenarios", *argv, "--out", str(scratch),
               "--bound-s", str(int(max(20, left - 10)))]
        try:
            rc = subprocess.run(cmd, timeout=left, stdin=subprocess.DEVNULL).returncode
        except subprocess.TimeoutExpired:
            rc = -1  # subprocess.run killed the scenario (its own pid) on the timeout
        timings[name] = round(time.monotonic() - t0, 1)
        if rc != 0:
            failed[name] = f"exit status {rc}"
    data = json.loads(scratch.read_text()) if scratch.exists() else {}
    data["suite"] = {"mode": args.mode, "seconds": round(time.monotonic() - started, 1),
                     "budget_s": budget, "scenario_seconds": timings, "failed": failed,
                     "loadavg_before": load0, "loadavg_after": loadavg(),
                     "command": f"make bench{'-quick' if args.mode == 'quick' else ''}"}
    data["targets"] = targets(data)
    data["sizing"] = sizing(data)
    print(render(data["targets"]), flush=True)
    for row in data["sizing"]:
        print(f"  sizing: {row['cores']} cores -> {row['tasks_per_s']} tasks/s "
              f"(limited by the {row['limited_by']})", flush=True)
    scratch.write_text(json.dumps(data, indent=2) + "\n")
    from bench.plot import plot
    png = scratch.with_suffix(".png")
    plot(data, png)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(png, RESULTS.with_suffix(".png.tmp"))
    os.replace(RESULTS.with_suffix(".png.tmp"), RESULTS.with_suffix(".png"))
    shutil.copyfile(scratch, RESULTS.with_suffix(".json.tmp"))
    os.replace(RESULTS.with_suffix(".json.tmp"), RESULTS)
    print(f"wrote {RESULTS} and {RESULTS.with_suffix('.png')} in {data['suite']['seconds']} s"
          + (f"; failed: {failed}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
