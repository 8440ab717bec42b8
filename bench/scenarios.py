"""Scenarios that drive the real cortexd with a simulated fleet (DESIGN.md §9, issue 5).

    python -m bench.scenarios steady  --nodes 1000 --tasks 5000 [--fleets 2] [--shards 2]
    python -m bench.scenarios ceiling --nodes 1000 --seconds 10
    python -m bench.scenarios hold    --nodes 10000 --fleets 4 --seconds 30   (+ storm)

``steady`` starts cortexd (embedded SQLite, loopback), enrolls ``--nodes``
simulated nodes spread over ``--fleets`` processes (bench/fleet.py: the real node
protocol), submits ``--tasks`` tasks through the Control API with ``--concurrency``
calls in flight, and measures from each submit to the task's FinishedAck at its
node (the hub sends it after the terminal state is committed): tasks/s and latency
percentiles, plus the hub's CPU-µs per task summed over all its processes.

``ceiling`` is the raw grpc.aio round-trip rate on this machine with the same
shape: one server process, ``--nodes`` bidirectional streams from ``--fleets``
client processes, each stream echoing a small frame in a loop.

Results are merged into ``bench/results/latest.json`` (one object per scenario
with the ``machine``). Every loop is bounded in count and time.
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import uvloop

from bench.machine import describe
from cortex.tokens import bearer, read_token_file
from cortex.v1 import control_pb2, control_pb2_grpc
from examples.localfleet import LocalHub, wait_until
from examples.proctable import descendants

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total


def save(name: str, result: dict[str, Any]) -> None:
    data: dict[str, Any] = {}
    if RESULTS.exists():
        data = json.loads(RESULTS.read_text())
    data["machine"] = describe()
    data[name] = result
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")


# -- steady ---------------------------------------------------------------------

async def submit_all(address: str, token: str, count: int, concurrency: int,
                     deadline_s: float) -> dict[str, float]:
    submitted: dict[str, float] = {}
    sem = asyncio.Semaphore(concurrency)
    end = time.monotonic() + deadline_s
    async with grpc.aio.insecure_channel(address) as channel:
        stub = control_pb2_grpc.ControlStub(channel)  # type: ignore[no-untyped-call]

        async def one(i: int) -> None:
            async with sem:
                if time.monotonic() > end:
                    return
                t0 = time.monotonic()
                resp = await stub.Submit(control_pb2.SubmitRequest(command=f"true # {i}"),
                                         metadata=bearer(token), timeout=60)
                submitted[resp.task.task_id] = t0

        await asyncio.gather(*(one(i) for i in range(count)))
    return submitted


def count_succeeded(address: str, token: str, limit: int) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = control_pb2_grpc.ControlStub(channel)  # type: ignore[no-untyped-call]
        resp = stub.ListTasks(control_pb2.ListTasksRequest(state=control_pb2.SUCCEEDED,
                                                           limit=limit),
                              metadata=bearer(token), timeout=30)
        return len(resp.tasks)


def attached(address: str, token: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = control_pb2_grpc.ControlStub(channel)  # type: ignore[no-untyped-call]
        resp = stub.ListNodes(control_pb2.ListNodesRequest(), metadata=bearer(token),
                              timeout=30)
        return sum(1 for n in resp.nodes if n.attached)


def start_fleets(hub: LocalHub, base: Path, args: argparse.Namespace, enrolled: bool = False
                 ) -> list["subprocess.Popen[bytes]"]:
    """Start ``args.fleets`` fleet processes with ``args.nodes`` simulated nodes in all."""
    from bench.fleet import enroll

    fleets = []
    per = args.nodes // args.fleets
    for f in range(args.fleets):
        tokens = base / f"fleet{f}.tokens"
        if not enrolled:
            enroll(hub.state_dir / "tokens", [f"sim-{f}-{i}" for i in range(per)], tokens)
        fleets.append(subprocess.Popen(
            [sys.executable, "-m", "bench.fleet", "--hub", hub.node_address,
             "--hub-key", str(hub.hub_key_file), "--tokens", str(tokens),
             "--report", str(base / f"fleet{f}.json"), "--seconds", str(args.bound_s),
             "--output-bytes", str(args.output_bytes)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(base / f"fleet{f}.log", "ab")))
    return fleets


def hub_pids(hub: LocalHub) -> list[int]:
    return [hub.proc.pid, *descendants(hub.proc.pid)] if hub.proc else []


def steady(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="cortex-bench-"))
    hub = LocalHub(base, shards=args.shards, extra_args=["--log-level", "warning"])
    hub.start()
    fleets: list[subprocess.Popen[bytes]] = []
    try:
        token = read_token_file(hub.admin_token_file)
        per = args.nodes // args.fleets
        fleets = start_fleets(hub, base, args)
        t_attach = time.monotonic()
        wait_until(lambda: attached(hub.control_address, token) >= per * args.fleets, 120,
                   "the fleet to attach", interval_s=0.5)
        attach_s = time.monotonic() - t_attach
        pids = hub_pids(hub)
        cpu0 = cpu_ticks(pids)
        submitted = uvloop.run(submit_all(hub.control_address, token, args.tasks,
                                          args.concurrency, args.bound_s))
        wait_until(lambda: count_succeeded(hub.control_address, token, args.tasks)
                   >= len(submitted), args.bound_s, "all tasks to succeed", interval_s=0.25)
        cpu1 = cpu_ticks(pids)
        for proc in fleets:
            proc.terminate()
        for proc in fleets:
            proc.wait(60)
        done: dict[str, float] = {}
        for f in range(args.fleets):
            done.update(json.loads((base / f"fleet{f}.json").read_text())["tasks_done"])
        lat = [(done[t] - s) * 1000 for t, s in submitted.items() if t in done]
        span = max(done[t] for t in submitted if t in done) - min(submitted.values())
        ticks = os.sysconf("SC_CLK_TCK")
        result = {
            "nodes": per * args.fleets, "shards": args.shards, "tasks": len(submitted),
            "completed": len(lat), "duration_s": round(span, 3),
            "tasks_per_s": round(len(lat) / span, 1), "concurrency": args.concurrency,
            "p50_ms": round(pct(lat, 0.50), 2), "p99_ms": round(pct(lat, 0.99), 2),
            "p999_ms": round(pct(lat, 0.999), 2), "attach_s": round(attach_s, 2),
            "hub_cpu_us_per_task": round((cpu1 - cpu0) / ticks * 1e6 / max(1, len(lat)), 1),
        }
        return result
    finally:
        for proc in fleets:
            if proc.poll() is None:
                proc.kill()
        hub.stop()


# -- hold and storm -------------------------------------------------------------

def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def hold_and_storm(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """``hold``: attached, heartbeating, no tasks — hub RSS and CPU. ``storm``: every
    fleet process is SIGKILLed and restarted at once — seconds until all re-attached."""
    base = Path(tempfile.mkdtemp(prefix="cortex-bench-"))
    hub = LocalHub(base, shards=args.shards, extra_args=[
        "--log-level", "warning", "--heartbeat-interval-ms", str(args.heartbeat_ms)])
    hub.start()
    fleets: list[subprocess.Popen[bytes]] = []
    try:
        token = read_token_file(hub.admin_token_file)
        total = args.nodes // args.fleets * args.fleets
        fleets = start_fleets(hub, base, args)
        wait_until(lambda: attached(hub.control_address, token) >= total, args.bound_s,
                   "the fleet to attach", interval_s=0.5)
        pids = hub_pids(hub)
        cpu0, t0 = cpu_ticks(pids), time.monotonic()
        time.sleep(args.seconds)  # the measurement window itself, not a synchronisation
        cpu1, t1 = cpu_ticks(pids), time.monotonic()
        hold = {"nodes": total, "heartbeat_interval_ms": args.heartbeat_ms,
                "hub_rss_mib": round(rss_mib(pids), 1),
                "hub_cpu_pct": round((cpu1 - cpu0) / os.sysconf("SC_CLK_TCK") / (t1 - t0)
                                     * 100, 2), "duration_s": round(t1 - t0, 1)}
        for proc in fleets:
            proc.kill()
        for proc in fleets:
            proc.wait(60)
        wait_until(lambda: attached(hub.control_address, token) == 0, 60,
                   "the hub to notice the fleet is gone", interval_s=0.2)
        t_storm = time.monotonic()
        fleets = start_fleets(hub, base, args, enrolled=True)
        wait_until(lambda: attached(hub.control_address, token) >= total, args.bound_s,
                   "the fleet to re-attach", interval_s=0.2)
        storm_s = time.monotonic() - t_storm
        for proc in fleets:
            proc.terminate()
        failed = 0
        for f, proc in enumerate(fleets):
            proc.wait(60)
            report = json.loads((base / f"fleet{f}.json").read_text())
            failed += report["attach_failures"]
        storm = {"nodes": total, "seconds_to_all_attached": round(storm_s, 2),
                 "failed_attempts": failed}
        return {"hold": hold, "storm": storm}
    finally:
        for proc in fleets:
            if proc.poll() is None:
                proc.kill()
        hub.stop()


# -- ceiling --------------------------------------------------------------------

def _echo_server(port_q: "multiprocessing.Queue[int]", seconds: float) -> None:
    async def main() -> None:
        async def echo(requests: Any, context: Any) -> Any:
            async for raw in requests:
                yield raw

        def ident(b: bytes) -> bytes:
            return b

        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "bench.Echo", {"Chat": grpc.stream_stream_rpc_method_handler(
                echo, request_deserializer=ident, response_serializer=ident)})])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        port_q.put(port)
        await asyncio.sleep(seconds)
        await server.stop(0)

    uvloop.run(main())


def _echo_clients(port: int, streams: int, seconds: float, out: "multiprocessing.Queue[int]"
                  ) -> None:
    async def main() -> int:
        total = 0
        end = time.monotonic() + seconds

        async def one() -> None:
            nonlocal total
            options = [("grpc.use_local_subchannel_pool", 1)]
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as ch:
                call = ch.stream_stream("/bench.Echo/Chat", request_serializer=lambda b: b,
                                        response_deserializer=lambda b: b)()
                while time.monotonic() < end:
                    await call.write(b"x" * 64)
                    await call.read()
                    total += 1
                await call.done_writing()

        await asyncio.gather(*(one() for _ in range(streams)), return_exceptions=True)
        return total

    out.put(uvloop.run(main()))


def ceiling(args: argparse.Namespace) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    port_q: multiprocessing.Queue[int] = ctx.Queue()
    server = ctx.Process(target=_echo_server, args=(port_q, args.seconds + 60))
    server.start()
    port = port_q.get(timeout=30)
    out: multiprocessing.Queue[int] = ctx.Queue()
    per = args.nodes // args.fleets
    clients = [ctx.Process(target=_echo_clients, args=(port, per, args.seconds, out))
               for _ in range(args.fleets)]
    for c in clients:
        c.start()
    totals = [out.get(timeout=args.seconds + 120) for _ in clients]
    for c in clients:
        c.join(30)
    server.terminate()
    server.join(30)
    return {"nodes": per * args.fleets, "duration_s": args.seconds,
            "tasks_per_s": round(sum(totals) / args.seconds, 1),
            "round_trips": sum(totals), "p50_ms": None, "p99_ms": None}


def main() -> None:
    p = argparse.ArgumentParser(description="Cortex scenarios against the real cortexd")
    p.add_argument("scenario", choices=["steady", "ceiling", "hold"],
                   help="hold also runs storm on the same fleet")
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--fleets", type=int, default=2)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--tasks", type=int, default=5000)
    p.add_argument("--concurrency", type=int, default=256)
    p.add_argument("--output-bytes", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--heartbeat-ms", type=int, default=5000)
    p.add_argument("--bound-s", type=float, default=300.0, help="hard bound on a run")
    args = p.parse_args()
    if args.scenario == "hold":
        for name, result in hold_and_storm(args).items():
            print(name, json.dumps(result, indent=2))
            save(name, result)
        return
    result = steady(args) if args.scenario == "steady" else ceiling(args)
    print(json.dumps(result, indent=2))
    save(args.scenario, result)


if __name__ == "__main__":
    main()
