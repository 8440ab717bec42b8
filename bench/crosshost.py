"""Cross-host dispatch latency: submit at hub A, the node attached to hub B.

Two cortexd hosts share a PostgreSQL schema (made for the run, dropped after) and a
Redis key prefix (deleted after). ``nodes`` simulated nodes (bench/fleet.py, the
real node protocol) attach to B only. One task at a time is submitted at A (the
cross-host path: A offers it to B through B's Redis Streams inbox, B places it and
sends the envelope) and, for comparison, at B (same host). Latency is from the
submit call to the node receiving its FinishedAck (the result is durable at the
hub), both on this machine's monotonic clock.

    python -m bench.crosshost [--samples 200] [--nodes 10]

Writes the ``crosshost`` object of bench/results/latest.json.
"""

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import psycopg
import redis

from bench.harness import pct, save
from cortex.tokens import bearer, read_token_file
from cortex.v1 import control_pb2, control_pb2_grpc
from examples.cluster import SimFleet, start_cluster, wait_for
from examples.localfleet import LocalHub

PG = os.environ.get("CORTEX_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("CORTEX_BENCH_REDIS", "redis://127.0.0.1:6379/0")


class _Fleet:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.hubs: list[LocalHub] = []


def _one_at_a_time(hub: LocalHub, samples: int) -> dict[str, float]:
    """Submit ``samples`` tasks one after another; task id -> submit time."""
    sent: dict[str, float] = {}
    meta = bearer(read_token_file(hub.admin_token_file))
    with grpc.insecure_channel(hub.control_address) as channel:
        stub = control_pb2_grpc.ControlStub(channel)  # type: ignore[no-untyped-call]
        for _ in range(samples):
            t0 = time.monotonic()
            task = stub.Submit(control_pb2.SubmitRequest(command="true"), metadata=meta,
                               timeout=10).task
            sent[task.task_id] = t0
            deadline = t0 + 10
            while stub.GetTask(control_pb2.GetTaskRequest(task_id=task.task_id),
                               metadata=meta, timeout=10).state != control_pb2.SUCCEEDED:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"task {task.task_id} did not succeed in 10 s")
                time.sleep(0.002)
    return sent


def _latencies(sent: dict[str, float], done: dict[str, float]) -> dict[str, Any]:
    ms = [(done[t] - t0) * 1000 for t, t0 in sent.items() if t in done]
    return {"samples": len(ms), "p50_ms": pct(ms, 0.5), "p99_ms": pct(ms, 0.99),
            "max_ms": max(ms) if ms else None}


def run(samples: int, nodes: int) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="cortex-crosshost-"))
    schema = f"cortex_bench_{uuid.uuid4().hex[:10]}"
    prefix = f"cortex-bench-{uuid.uuid4().hex[:10]}"
    sep = "&" if "?" in PG else "?"
    store = f"{PG}{sep}options=-csearch_path%3D{schema}"
    fleet = _Fleet(base)
    sim = SimFleet(base, "x", [], nodes, bound_s=600)
    r = redis.Redis.from_url(REDIS)
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        sim.enroll(base / "hub0" / "hub" / "tokens")
        a, b = start_cluster(fleet, store, f"{REDIS}?prefix={prefix}",
                             extra=("--log-level", "warning"))
        sim.hubs = [b]
        sim.start()
        wait_for(lambda: sim.attached() == nodes, 60, "the nodes to attach to B")
        _one_at_a_time(a, 5)  # warm both paths (connections, caches)
        _one_at_a_time(b, 5)
        cross = _one_at_a_time(a, samples)
        same = _one_at_a_time(b, samples)
        done = sim.stop()["tasks_done"]
        result = {"nodes": nodes, "hubs": 2, "store": "postgresql", "coordination": "redis",
                  "cross_host": _latencies(cross, done), "same_host": _latencies(same, done),
                  "how": "submit at A (node on B) vs at B; submit -> node's FinishedAck, "
                         "one task at a time"}
        c, s = result["cross_host"], result["same_host"]
        if c["p50_ms"] and s["p50_ms"]:
            result["p50_ratio"] = round(c["p50_ms"] / s["p50_ms"], 2)
        return result
    finally:
        sim.kill()
        for hub in fleet.hubs:
            hub.kill()
        keys = list(r.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            r.delete(*keys)
        r.close()
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--nodes", type=int, default=10)
    args = p.parse_args()
    result = run(args.samples, args.nodes)
    save("crosshost", result)
    print(result)


if __name__ == "__main__":
    main()
