"""The plot of a suite run: throughput and p99 per scenario, hub against ceiling and peer.

    python -m bench.plot [bench/results/latest.json] [OUT.png]
"""

import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen before pyplot loads)

from bench.harness import RESULTS  # noqa: E402

# (label, key in the JSON, sub-key or None, colour)
BARS = [
    ("ceiling\n(raw grpc.aio)", "ceiling", None, "#888888"),
    ("cortexd\n100 nodes", "steady_100", None, "#1f77b4"),
    ("cortexd\n1,000 nodes", "steady", None, "#1f77b4"),
    ("cortexd\n10,000 nodes", "steady_10000", None, "#1f77b4"),
    ("cortexd 1k\n1 shard", "shards", "shards_1", "#6baed6"),
    ("cortexd 1k\n2 shards", "shards", "shards_2", "#6baed6"),
    ("peer: Celery\n+ Redis, 2 procs", "peer", None, "#d62728"),
]


def _figures(data: dict[str, Any]) -> list[tuple[str, float, float | None, str]]:
    out = []
    for label, key, sub, colour in BARS:
        obj = data.get(key)
        if obj is not None and sub is not None:
            obj = obj.get(sub)
        if obj and obj.get("tasks_per_s") is not None:
            out.append((label, float(obj["tasks_per_s"]), obj.get("p99_ms"), colour))
    return out


def plot(data: dict[str, Any], out: Path) -> None:
    bars = _figures(data)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8), constrained_layout=True)
    labels = [b[0] for b in bars]
    colours = [b[3] for b in bars]
    xs = range(len(bars))
    top.bar(xs, [b[1] for b in bars], color=colours)
    top.set_ylabel("tasks/s (ceiling: round trips/s)")
    top.set_title("Throughput at maximum rate")
    for x, b in zip(xs, bars, strict=True):
        top.annotate(f"{b[1]:,.0f}", (x, b[1]), ha="center", va="bottom", fontsize=8)
    top.set_xticks(list(xs), labels, fontsize=8)
    p99 = [b[2] if b[2] is not None else 0.0 for b in bars]
    bottom.bar(xs, p99, color=colours)
    bottom.set_yscale("log")
    bottom.set_ylabel("p99 latency, ms (log)")
    bottom.set_title("p99 at maximum rate (submit → result durable; ceiling: one round trip)")
    for x, v in zip(xs, p99, strict=True):
        bottom.annotate(f"{v:,.1f}", (x, v or 1e-3), ha="center", va="bottom", fontsize=8)
    bottom.set_xticks(list(xs), labels, fontsize=8)
    m = data.get("machine", {})
    suite = data.get("suite", {})
    fig.suptitle(f"Cortex bench ({suite.get('mode', '?')}, {m.get('date', '?')}): "
                 f"{m.get('cores')} cores {m.get('cpu_model')}, Python {m.get('python')}, "
                 f"grpcio {m.get('packages', {}).get('grpcio')}, load average "
                 f"{suite.get('loadavg_before', '?')}", fontsize=9)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    import json
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else src.with_suffix(".png")
    plot(json.loads(src.read_text()), out)
    print(out)


if __name__ == "__main__":
    main()
