"""``flood``: many tasks printing at a steady rate, with prompt events under that load.

``--tasks`` tasks each print ``--stream-bps`` bytes/s for ``--seconds`` seconds on
simulated nodes (bench/simnode.py: output frames once a second, at most the node's window
unacknowledged per task, exactly as nodeagent streams), and every ``--prompt-every-s``
each task sends a PromptEvent whose excerpt carries the wall-clock time it was sent.
``--watchers`` Control ``Watch`` streams (states and prompts, no output) on as many of
the tasks measure the latency from the node's send to the watcher's receipt (one clock:
same machine). The hub's CPU is summed over all its processes from the first Submit until
every task's FinishedAck; delivered bytes are what the hub acknowledged (its store has
them) against what the nodes produced and sent.
"""

import argparse
import asyncio
import re
import time
from typing import Any

import grpc
import uvloop

from bench.harness import TICKS_PER_S, Bench, control_stub, cpu_ticks, pct, running_hub
from bench.scenarios import TERMINAL, fleet_done, submit_closed
from cortex.tokens import bearer
from cortex.v1 import control_pb2

SENT_NS = re.compile(rb"sent_ns=(\d+)")


async def _watch(stub: Any, token: str, task_id: str, lat: list[float], end: float) -> None:
    """Prompt latencies of one task until it ends (or the bound)."""
    timeout = max(1.0, end - time.monotonic())
    call = stub.Watch(control_pb2.WatchRequest(task_id=task_id, no_output=True),
                      metadata=bearer(token), timeout=timeout)
    try:
        async for ev in call:
            kind = ev.WhichOneof("kind")
            if kind == "prompt":
                m = SENT_NS.search(ev.prompt.excerpt)
                if m:
                    lat.append((time.time_ns() - int(m.group(1))) / 1e6)
            elif kind == "state" and ev.state.state in TERMINAL:
                return
    except grpc.aio.AioRpcError as e:
        if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise


async def _drive(b: Bench, args: argparse.Namespace, bound_s: float
                 ) -> tuple[dict[str, float], list[float], float]:
    """Submit, watch, and wait for every FinishedAck; (submitted, prompt ms, seconds)."""
    end = time.monotonic() + bound_s
    t0 = time.monotonic()
    submitted = await submit_closed(b.hub.control_address, b.token, args.tasks, 64, bound_s,
                                    "f")
    lat: list[float] = []
    async with grpc.aio.insecure_channel(b.hub.control_address) as channel:
        stub = control_stub(channel)
        watches = [asyncio.create_task(_watch(stub, b.token, t, lat, end))
                   for t in list(submitted)[:args.watchers]]
        while b.done() < len(submitted) and time.monotonic() < end:
            await asyncio.sleep(0.2)  # polls the fleets' status files under the bound
        elapsed = time.monotonic() - t0
        await asyncio.gather(*watches, return_exceptions=True)
    return submitted, lat, elapsed


def flood(args: argparse.Namespace) -> dict[str, Any]:
    nodes = max(args.fleets, args.nodes)
    with running_hub(args.shards) as b:
        b.start_fleets(nodes, args.fleets, args.bound_s, extra=[
            "--stream-bps", str(args.stream_bps), "--stream-s", str(args.seconds),
            "--prompt-every-s", str(args.prompt_every_s)])
        b.wait_attached(args.bound_s)
        pids = b.hub_pids()
        cpu0 = cpu_ticks(pids)
        submitted, lat, elapsed = uvloop.run(_drive(b, args, args.seconds + args.drain_s))
        cpu1 = cpu_ticks(pids)
        reports = b.stop_fleets()
        done = fleet_done(reports)
        finished = sum(1 for t in submitted if t in done)
        produced = sum(r["bytes_produced"] for r in reports)
        expected = len(submitted) * args.stream_bps * args.seconds
        acked = sum(r["bytes_acked"] for r in reports)
        return {
            "tasks": len(submitted), "nodes": b.nodes, "shards": args.shards,
            "stream_bps_per_task": args.stream_bps, "stream_s": args.seconds,
            "finished": finished, "duration_s": round(elapsed, 2),
            "hub_cpu_pct": round((cpu1 - cpu0) / TICKS_PER_S / elapsed * 100, 1),
            "hub_cpu_us_per_kib": round((cpu1 - cpu0) / TICKS_PER_S * 1e6
                                        / max(1, acked / 1024), 1),
            "bytes_expected": int(expected), "bytes_produced": produced,
            "bytes_sent": sum(r["bytes_sent"] for r in reports), "bytes_acked": acked,
            "delivered_pct": round(acked / max(1, expected) * 100, 2),
            "delivered_mib_per_s": round(acked / 2**20 / elapsed, 2),
            "prompts_sent": sum(r["prompts_sent"] for r in reports),
            "prompts_seen": len(lat), "watchers": min(args.watchers, len(submitted)),
            "prompt_p50_ms": pct(lat, 0.5), "prompt_p99_ms": pct(lat, 0.99),
            "prompt_max_ms": round(max(lat), 2) if lat else None}
