"""Run the micro-benchmarks and write ``bench/results/micro.json``.

    python -m bench.run_micro [--out FILE] [--max-time SECONDS] [-k EXPR]

It runs ``pytest bench`` with pytest-benchmark (bounded: each benchmark gets
``--max-time`` seconds, cross-process transfers a fixed 5 rounds, the whole run
a hard ``RUN_TIMEOUT_S``), then turns the raw statistics into figures: µs and
CPU µs per message for signing, records/s and MB/s for rings and sockets, and
the ratios the defaults are chosen by. Rates use the median round, which a
noisy shared machine disturbs least; the best round is kept beside it.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "micro.json"
RUN_TIMEOUT_S = 170


def _figures(bench: dict[str, Any]) -> dict[str, Any]:
    stats, extra = bench["stats"], bench["extra_info"]
    out: dict[str, Any] = {"name": bench["name"], "group": bench["group"], **extra}
    if extra["kind"] in ("encode_sign", "verify"):
        n = extra["messages_per_round"]
        out.update(us_per_msg=round(stats["median"] / n * 1e6, 2),
                   us_per_msg_best=round(stats["min"] / n * 1e6, 2),
                   msgs_per_s=round(n / stats["median"]),
                   parent_cpu_us_per_msg=round(extra["parent_cpu_us_per_msg"], 2),
                   loop_thread_cpu_us_per_msg=round(extra["loop_thread_cpu_us_per_msg"], 2))
    else:
        n, size = extra["records_per_round"], extra["record_bytes"]
        out.update(records_per_s=round(n / stats["median"]),
                   mb_per_s=round(n * size / stats["median"] / 1e6, 1),
                   records_per_s_best=round(n / stats["min"]))
    out["stats_s"] = {k: stats[k] for k in ("min", "median", "mean", "stddev", "rounds")}
    return out


def _ratios(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The comparisons the defaults follow, all from this one run."""
    sign = {(r["mode"], r["batch"]): r for r in results if r["kind"] == "encode_sign"}
    pool_vs_inline = {}
    for (mode, batch), r in sorted(sign.items()):
        inline = sign.get(("inline", batch))
        if mode == "inline" or inline is None:
            continue
        pool_vs_inline[f"{mode} batch {batch}"] = {
            "wall": round(r["us_per_msg"] / inline["us_per_msg"], 2),
            "loop_thread_cpu": round(r["loop_thread_cpu_us_per_msg"]
                                     / inline["loop_thread_cpu_us_per_msg"], 3),
            "parent_cpu": round(r["parent_cpu_us_per_msg"] / inline["parent_cpu_us_per_msg"], 3),
        }
    xp = {(r["transport"], r["record_bytes"]): r for r in results if r["kind"] == "cross_process"}
    ring_vs_socket = {}
    for (transport, size), r in sorted(xp.items()):
        if transport.startswith("ring"):
            continue
        for ring_kind in ("ring", "ring-yield"):
            if (ring := xp.get((ring_kind, size))) is not None:
                ring_vs_socket[f"{ring_kind}/{transport} {size} B"] = round(
                    ring["records_per_s"] / r["records_per_s"], 2)
    return {"pool_over_inline": pool_vs_inline, "ring_over_socket_records_per_s": ring_vs_socket}


def _table(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        if "us_per_msg" in r:
            lines.append(f"{r['name']:44} {r['us_per_msg']:9.1f} µs/msg  parent CPU "
                         f"{r['parent_cpu_us_per_msg']:7.1f}  loop CPU "
                         f"{r['loop_thread_cpu_us_per_msg']:7.1f} µs/msg")
        else:
            lines.append(f"{r['name']:44} {r['records_per_s']:>11,} rec/s "
                         f"{r['mb_per_s']:9.1f} MB/s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    if str(ROOT) not in sys.path:  # run as a script, not with -m
        sys.path.insert(0, str(ROOT))
    from bench import machine

    p = argparse.ArgumentParser(prog="run_micro", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--max-time", type=float, default=1.0,
                   help="seconds of rounds per calibrated benchmark (default 1.0)")
    p.add_argument("-k", dest="select", help="pytest -k expression, to run a subset")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.json"
        cmd = [sys.executable, "-m", "pytest", "bench", "-q", "-p", "no:cacheprovider",
               f"--benchmark-json={raw}", f"--benchmark-max-time={args.max_time}",
               "--benchmark-min-rounds=5", "--benchmark-columns=median,rounds"]
        if args.select:
            cmd += ["-k", args.select]
        started = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"run_micro: benchmarks took over {RUN_TIMEOUT_S} s", file=sys.stderr)
            return 1
        if proc.returncode != 0 or not raw.exists():
            print(f"run_micro: pytest exited with {proc.returncode}", file=sys.stderr)
            return proc.returncode or 1
        data = json.loads(raw.read_text())
    results = [_figures(b) for b in data["benchmarks"]]
    doc = {"machine": machine.describe(),
           "command": "python -m bench.run_micro " + " ".join(argv or sys.argv[1:]),
           "duration_s": round(time.monotonic() - started, 1),
           "ratios": _ratios(results),
           "benchmarks": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    print(_table(results))
    print(json.dumps(doc["ratios"], indent=2))
    print(f"run_micro: wrote {args.out} in {doc['duration_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
