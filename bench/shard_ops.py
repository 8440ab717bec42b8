"""How long shard operations take with many attached nodes (issue 13, part 4).

Starts a real cortexd (2 shards) and ``--nodes`` simulated nodes (bench.fleet, the
real node protocol), then times ``cortexctl shards drain 0``, ``restart 0``,
``scale 3``, ``rebalance`` and ``scale 1`` through cortexctl (--json: the
operation's own elapsed_s and counts), and checks that no simulated node's stream
was dropped for good (all attached again at the end).

    .venv/bin/python -m bench.shard_ops --nodes 500
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from examples.cluster import SimFleet
from examples.localfleet import Ctl, LocalHub, wait_until

STEPS = (("drain", "0"), ("restart", "0"), ("scale", "3"), ("rebalance",), ("scale", "1"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=500)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="cortex-shardops-") as tmp:
        base = Path(tmp)
        hub = LocalHub(base / "hub", shards=2).start()
        sims = SimFleet(base, "sim", [hub], args.nodes, bound_s=600)
        try:
            sims.enroll(hub.state_dir / "tokens")
            sims.start()
            wait_until(lambda: sims.attached() == args.nodes, 120, "every node attached")
            ctl = Ctl(hub)
            rows = []
            for step in STEPS:
                t0 = time.monotonic()
                out = ctl("shards", *step, "--json", timeout_s=300)
                wall = time.monotonic() - t0
                last = json.loads(out.stdout.decode().splitlines()[-1])
                wait_until(lambda: sims.attached() == args.nodes, 120, "every node back")
                rows.append({"step": " ".join(step), "ok": last["ok"],
                             "elapsed_s": last["elapsed_s"], "cortexctl_wall_s": round(wall, 2),
                             "moved": last["counts"].get("moved", 0),
                             "message": last["message"]})
                print(json.dumps(rows[-1]), flush=True)
            status = sims.status()
            print(json.dumps({"nodes": args.nodes, "attached": status.get("attached"),
                              "loadavg": Path("/proc/loadavg").read_text().split()[:3]}))
        finally:
            sims.kill()
            hub.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
