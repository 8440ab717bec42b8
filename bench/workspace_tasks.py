"""What running in a workspace costs a task (issue 12, ``submit --workspace``).

One hub and one node on loopback; a workspace of ``--files`` small files attached to the
node. ``Run`` of ``true`` through one open channel (no cortexctl start-up in the figure),
alternating blocks of plain tasks and tasks in the workspace, so both see the same load;
a workspace task waits on the node for one sync round that started after it arrived
(scan, the tree's listing to the hub, commit). Prints one JSON object: p50/p90 in ms.

    python -m bench.workspace_tasks [--files 1000] [--runs 30]
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import grpc

from cortex.tokens import bearer
from cortex.v1 import control_pb2, control_pb2_grpc
from examples.localfleet import Ctl, LocalHub, LocalNode, wait_until


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=30, help="tasks of each kind")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-wstasks-"))
    hub = LocalHub(base / "hub", shards=1).start()
    node = LocalNode(hub, "node-1").start()
    try:
        ctl = Ctl(hub)
        ctl.wait_nodes(["node-1"])
        src = base / "src"
        src.mkdir()
        for i in range(args.files):
            (src / f"f{i}.txt").write_text(f"file {i}\n" * 20)
        ctl.ok("workspace", "create", "wb", "--from", str(src))
        copy = base / "copy"
        ctl.ok("workspace", "attach", "wb", "--node", "node-1", "--path", str(copy))
        wait_until(lambda: (copy / f"f{args.files - 1}.txt").exists(), 120, "first sync")
        with grpc.insecure_channel(hub.control_address) as channel:
            stub = control_pb2_grpc.ControlStub(channel)  # type: ignore[no-untyped-call]
            md = bearer(hub.admin_token_file.read_text().strip())

            def one(workspace: str) -> float:
                t0 = time.perf_counter()
                got = stub.Run(control_pb2.RunRequest(task=control_pb2.SubmitRequest(
                    command="true", workspace=workspace)), metadata=md, timeout=60)
                if got.task.state != control_pb2.SUCCEEDED:
                    raise SystemExit(f"task failed: {got.task.reason}")
                return (time.perf_counter() - t0) * 1000

            one(""), one("wb")  # warm
            times: dict[str, list[float]] = {"plain": [], "workspace": []}
            block = max(1, args.runs // 2)
            for _ in range(2):
                for kind, ws in (("plain", ""), ("workspace", "wb")):
                    times[kind].extend(one(ws) for _ in range(block))
        out: dict[str, object] = {"files": args.files, "load": os.getloadavg()[0]}
        for kind, v in times.items():
            v.sort()
            out[kind] = {"n": len(v), "p50_ms": round(statistics.median(v), 1),
                         "p90_ms": round(v[int(len(v) * 0.9)], 1)}
        print(json.dumps(out))
    finally:
        node.kill()
        hub.kill()


if __name__ == "__main__":
    main()
