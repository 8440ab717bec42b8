"""Workspace sync against rsync, same machine, same run (issue 12).

A tree of ``--files`` files (1–8 KiB, 100 directories) on a node's copy; the node
attaches the workspace and the first sync pushes it to the hub's tree (time from attach
until both trees have the same digest; bytes = file bytes pushed, from the node's
``workspace_round`` log lines). Then ``--edits`` files are rewritten and the time until
the hub has them. rsync: ``rsync -a`` of the same tree between two local directories,
first copy and after the same edits (``--stats``: bytes sent). Installs rsync with
apt-get only if it is missing. Prints one JSON object.

    python -m bench.workspace [--files 10000] [--edits 100]
"""

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from cortex.wsmerge import tree_digest
from cortex.wstree import TreeScanner
from examples.localfleet import Ctl, LocalHub, LocalNode, log_events, wait_until


def digest(root: Path) -> str:
    return tree_digest(TreeScanner(root).scan())


def make_tree(root: Path, files: int, rng: random.Random) -> None:
    for i in range(files):
        d = root / f"d{i % 100:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}.txt").write_bytes(rng.randbytes(rng.randint(1024, 8192)))


def edit(root: Path, edits: int, rng: random.Random) -> None:
    paths = sorted(root.rglob("*.txt"))
    for p in rng.sample(paths, edits):
        p.write_bytes(rng.randbytes(rng.randint(1024, 8192)))


def rsync(src: Path, dst: Path) -> dict[str, float]:
    if shutil.which("rsync") is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "rsync"], check=True,
                       capture_output=True)
    t0 = time.monotonic()
    out = subprocess.run(["rsync", "-a", "--stats", f"{src}/", f"{dst}/"], check=True,
                         capture_output=True, text=True).stdout
    sent = re.search(r"Total bytes sent: ([\d,]+)", out)
    return {"s": round(time.monotonic() - t0, 3),
            "bytes_sent": int(sent.group(1).replace(",", "")) if sent else -1}


def pushed(node: LocalNode, since: int) -> int:
    return sum(e.get("pushed", 0) for e in log_events(node.log_path, "workspace_round")[since:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--edits", type=int, default=100)
    args = ap.parse_args()
    rng = random.Random(12)
    base = Path(tempfile.mkdtemp(prefix="cortex-bench-ws-"))
    hub = LocalHub(base / "hub", shards=1).start()
    node = LocalNode(hub, "node-1").start()
    ctl = Ctl(hub)
    try:
        ctl.wait_nodes(["node-1"])
        copy = base / "copy"
        make_tree(copy, args.files, rng)
        ctl.ok("workspace", "create", "bench")
        ht = hub.state_dir / "workspaces" / "default" / "bench" / "tree"
        want = digest(copy)
        t0 = time.monotonic()
        ctl.ok("workspace", "attach", "bench", "--node", "node-1", "--path", str(copy))
        wait_until(lambda: ht.exists() and digest(ht) == want, 600, "first sync",
                   interval_s=0.2)
        first = {"s": round(time.monotonic() - t0, 3), "bytes_pushed": pushed(node, 0)}
        rounds = len(log_events(node.log_path, "workspace_round"))
        edit(copy, args.edits, rng)
        want = digest(copy)
        t0 = time.monotonic()
        wait_until(lambda: digest(ht) == want, 300, "edits", interval_s=0.2)
        edits = {"s": round(time.monotonic() - t0, 3), "bytes_pushed": pushed(node, rounds)}
        # rsync of the same tree (as it stands after the edits) and the same edits again
        r_dst = base / "rsync-dst"
        r_first = rsync(copy, r_dst)
        edit(copy, args.edits, rng)
        r_edits = rsync(copy, r_dst)
        print(json.dumps({"files": args.files, "edits": args.edits,
                          "workspace_first": first, "workspace_edits": edits,
                          "rsync_first": r_first, "rsync_edits": r_edits,
                          "loadavg": Path("/proc/loadavg").read_text().split()[:3]}))
    finally:
        node.kill()
        hub.kill()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    main()
