"""Scenarios that drive the real cortexd with a simulated fleet (DESIGN.md §9, issue 5).

    python -m bench.scenarios steady  --nodes 1000 --tasks 5000 [--fleets 2] [--shards 2]
    python -m bench.scenarios ceiling --nodes 1000 --seconds 10
    python -m bench.scenarios hold    --nodes 10000 --fleets 4 --seconds 30   (+ storm)
    python -m bench.scenarios shards  --nodes 1000 --tasks 3000
    python -m bench.scenarios peer    --tasks 3000 --concurrency 256
    python -m bench.scenarios flood   --tasks 200 --seconds 60

``steady`` starts cortexd (embedded SQLite, loopback), enrolls ``--nodes`` simulated
nodes spread over ``--fleets`` processes (bench/fleet.py: the real node protocol) and
runs three phases on the same fleet: ``--tasks`` tasks at maximum rate (``--concurrency``
Submit calls in flight), then a fixed open-loop rate of half the maximum for ``--fixed-s``
seconds, then ``--single`` tasks one at a time (submit, Watch to the end, next). A task's
latency runs from its Submit to its FinishedAck at the node (the hub sends it after the
terminal state is committed). It reports tasks/s, p50/p99/p999 and the hub's CPU-µs per
task summed over all its processes, by process kind, and the fleet's (a phase's
``PhaseMeter``). ``--settle-s`` waits after the attach (the heartbeat rate settles:
bench/README.md, issue 9 item 5), ``--idle-s`` then measures the attached fleet's cost with
no task, ``--single-pinned`` adds one-at-a-time tasks all on one node.

``ceiling`` is the raw grpc.aio round-trip rate on this machine with the same shape: one
server process, ``--nodes`` bidirectional streams from ``--fleets`` client processes, each
stream echoing a small frame in a loop. ``shards`` runs steady's maximum-rate phase with 1
and with 2 shards. ``peer`` (bench/peer.py) and ``flood`` (bench/flood.py) are described
there.

Results are merged into ``bench/results/latest.json`` (one object per scenario with the
``machine``). Every loop is bounded in count and time.
"""

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import uvloop

from bench import cpukinds
from bench.harness import (
    RESULTS,
    TICKS_PER_S,
    Bench,
    control_stub,
    cpu_ticks,
    loadavg,
    pct,
    rss_mib,
    running_hub,
    save,
)
from bench.pgschema import pg_schema
from bench.profile import HubProfile
from cortex.tokens import bearer
from cortex.v1 import control_pb2
from examples.localfleet import wait_until

TERMINAL = {control_pb2.SUCCEEDED, control_pb2.FAILED, control_pb2.CANCELLED,
            control_pb2.TIMED_OUT, control_pb2.LOST}


# -- steady ---------------------------------------------------------------------

async def submit_closed(address: str, token: str, count: int, concurrency: int,
                        deadline_s: float, tag: str,
                        finished: Callable[[], int] | None = None,
                        many: int = 0) -> dict[str, float]:
    """``count`` tasks, at most ``concurrency`` unfinished; {task_id: monotonic submit time}.

    ``finished()`` counts this batch's tasks that ended (the fleets' FinishedAcks, from
    their status files, which lag by up to one status interval); without it only the
    Submit calls in flight are bounded (Submit returns once the task is queued, so the
    queue then grows as fast as the hub accepts). ``many`` > 0: the room is filled with
    SubmitMany calls of up to ``many`` tasks instead of one Submit per task."""
    submitted: dict[str, float] = {}
    end = time.monotonic() + deadline_s
    in_flight: set[asyncio.Task[None]] = set()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = control_stub(channel)

        async def one(i: int) -> None:
            t0 = time.monotonic()
            resp = await stub.Submit(control_pb2.SubmitRequest(command=f"true # {tag}{i}"),
                                     metadata=bearer(token), timeout=60)
            submitted[resp.task.task_id] = t0

        async def batch(i: int, n: int) -> None:
            t0 = time.monotonic()
            resp = await stub.SubmitMany(control_pb2.SubmitManyRequest(tasks=[
                control_pb2.SubmitRequest(command=f"true # {tag}{i + k}") for k in range(n)]),
                metadata=bearer(token), timeout=60)
            for r in resp.results:
                submitted[r.submitted.task.task_id] = t0

        i = 0
        while i < count and time.monotonic() < end:
            ended = finished() if finished is not None else i - len(in_flight)
            room = concurrency - (i - ended)
            if room <= 0 or (finished is None and len(in_flight) >= concurrency):
                await asyncio.sleep(0.002)  # the pacing of a closed loop, bounded by `end`
                continue
            if many:
                n = min(room, count - i, many)
                call = asyncio.create_task(batch(i, n))
                in_flight.add(call)
                call.add_done_callback(in_flight.discard)
                i += n
                continue
            for _ in range(min(room, count - i)):
                call = asyncio.create_task(one(i))
                in_flight.add(call)
                call.add_done_callback(in_flight.discard)
                i += 1
        await asyncio.gather(*in_flight)
    return submitted


async def submit_open(address: str, token: str, rate: float, count: int, deadline_s: float,
                      max_in_flight: int = 2048) -> dict[str, float]:
    """Open loop: submit i is due at start + i/rate, whether or not earlier ones finished
    (bounded by ``max_in_flight`` calls). Latency counts from the due time."""
    submitted: dict[str, float] = {}
    sem = asyncio.Semaphore(max_in_flight)
    start = time.monotonic()
    end = start + deadline_s
    async with grpc.aio.insecure_channel(address) as channel:
        stub = control_stub(channel)

        async def one(i: int, due: float) -> None:
            try:
                resp = await stub.Submit(control_pb2.SubmitRequest(command=f"true # r{i}"),
                                         metadata=bearer(token), timeout=60)
                submitted[resp.task.task_id] = due
            finally:
                sem.release()

        calls = []
        for i in range(count):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # the pacing of an open loop, not a synchronisation
            if time.monotonic() > end:
                break
            await sem.acquire()
            calls.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*calls)
    return submitted


async def submit_single(address: str, token: str, count: int, deadline_s: float,
                        pin: str = "") -> tuple[dict[str, float], list[float]]:
    """One task at a time: Submit, Watch (states only) to its end, then the next
    (``pin``: every one on that node)."""
    submitted: dict[str, float] = {}
    watched: list[float] = []
    end = time.monotonic() + deadline_s
    async with grpc.aio.insecure_channel(address) as channel:
        stub = control_stub(channel)
        for i in range(count):
            if time.monotonic() > end:
                break
            t0 = time.monotonic()
            resp = await stub.Submit(control_pb2.SubmitRequest(command=f"true # s{i}",
                                                               node_id=pin),
                                     metadata=bearer(token), timeout=60)
            submitted[resp.task.task_id] = t0
            async for ev in stub.Watch(control_pb2.WatchRequest(task_id=resp.task.task_id,
                                                                no_output=True),
                                       metadata=bearer(token), timeout=60):
                if ev.WhichOneof("kind") == "state" and ev.state.state in TERMINAL:
                    break
            watched.append((time.monotonic() - t0) * 1000)
    return submitted, watched


def phase_figures(submitted: dict[str, float], done: dict[str, float]) -> dict[str, Any]:
    lat = [(done[t] - s) * 1000 for t, s in submitted.items() if t in done]
    if not lat:
        return {"tasks": len(submitted), "completed": 0}
    span = max(done[t] for t in submitted if t in done) - min(submitted.values())
    return {"tasks": len(submitted), "completed": len(lat), "duration_s": round(span, 3),
            "tasks_per_s": round(len(lat) / span, 1), "p50_ms": pct(lat, 0.50),
            "p99_ms": pct(lat, 0.99), "p999_ms": pct(lat, 0.999)}


def fleet_done(reports: list[dict[str, Any]]) -> dict[str, float]:
    done: dict[str, float] = {}
    for r in reports:
        done.update(r["tasks_done"])
    return done


def run_max_phase(b: Bench, args: argparse.Namespace, expected: int
                  ) -> tuple[dict[str, float], float, int, dict[str, Any]]:
    """The maximum-rate phase: (submitted, approximate tasks/s, hub CPU ticks, the
    phase's :class:`cpukinds.PhaseMeter` figures: µs of CPU per task by hub process kind,
    the fleet's, and the heartbeats sent meanwhile)."""
    pids = b.hub_pids()
    with contextlib.ExitStack() as stack:
        if args.profile_dir:
            b.profile = stack.enter_context(HubProfile(Path(args.profile_dir), pids))
        cpu0, t0 = cpu_ticks(pids), time.monotonic()
        meter = cpukinds.PhaseMeter(b)
        submitted = uvloop.run(submit_closed(b.hub.control_address, b.token, args.tasks,
                                             args.concurrency, args.bound_s, "m",
                                             finished=lambda: b.done() - expected,
                                             many=args.submit_many))
        b.wait_done(expected + len(submitted), args.bound_s)
        cpu1, t1 = cpu_ticks(pids), time.monotonic()
        phase = meter.per_task(len(submitted))
    return submitted, len(submitted) / (t1 - t0), cpu1 - cpu0, phase


def fleet_extra(args: argparse.Namespace) -> list[str]:
    return ["--output-bytes", str(args.output_bytes), *(["--no-fold"] if args.no_fold else [])]


def steady(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        extra = []
        if args.store == "postgresql":  # a schema of its own, dropped after
            extra = ["--store", stack.enter_context(pg_schema())]
        return _steady(args, extra)


def _steady(args: argparse.Namespace, hub_args: list[str]) -> dict[str, Any]:
    with running_hub(args.shards, hub_args) as b:
        b.start_fleets(args.nodes, args.fleets, args.bound_s,
                       extra=fleet_extra(args))
        attach_s = b.wait_attached(args.bound_s)
        if args.settle_s > 0:
            # Let the heartbeat rate settle: a node attached while the fleet was small was
            # told a short interval, and learns the fleet's from its next heartbeat's ack.
            time.sleep(args.settle_s)  # a settling period, not a synchronisation
        idle: dict[str, Any] = {}
        if args.idle_s > 0:  # what the attached fleet costs with no task: per second
            meter, t0 = cpukinds.PhaseMeter(b), time.monotonic()
            time.sleep(args.idle_s)  # a measuring period, not a synchronisation
            seconds = time.monotonic() - t0
            per_s = meter.per_task(1)
            idle = {"seconds": round(seconds, 2),
                    "hub_cpu_pct_by_process": {
                        k: round(v / seconds / 1e4, 2)
                        for k, v in per_s["hub_cpu_us_per_task_by_process"].items()},
                    "fleet_cpu_pct": round(per_s["fleet_cpu_us_per_task"] / seconds / 1e4, 2),
                    "heartbeats_per_s": round(per_s["heartbeats"] / seconds, 1)}
        load0 = loadavg()
        submitted, approx_tps, ticks, phase = run_max_phase(b, args, 0)
        expected = len(submitted)
        fixed: dict[str, float] = {}
        rate = round(approx_tps / 2, 1)
        if args.fixed_s > 0:
            fixed = uvloop.run(submit_open(b.hub.control_address, b.token, rate,
                                           int(rate * args.fixed_s), args.bound_s))
            expected += len(fixed)
            b.wait_done(expected, args.bound_s)
        single: dict[str, float] = {}
        watched: list[float] = []
        single_cpu: dict[str, Any] = {}
        if args.single > 0:
            hub_pids = b.hub_pids()
            cpu0, meter = cpu_ticks(hub_pids), cpukinds.PhaseMeter(b)
            single, watched = uvloop.run(submit_single(b.hub.control_address, b.token,
                                                       args.single, args.bound_s))
            # The Watch can see the terminal state before the node has the FinishedAck.
            expected += len(single)
            b.wait_done(expected, args.bound_s)
            single_cpu = {"hub_cpu_us_per_task": round(
                (cpu_ticks(hub_pids) - cpu0) / TICKS_PER_S * 1e6 / max(1, len(single)), 1),
                **meter.per_task(len(single))}
        pinned: dict[str, float] = {}
        if args.single_pinned > 0:
            # The same, every task on one node: a node used a moment ago, where the phase
            # above sends each task to another (the least recently picked of the idle).
            pinned, _ = uvloop.run(submit_single(b.hub.control_address, b.token,
                                                 args.single_pinned, args.bound_s,
                                                 pin="sim-0-0"))
            expected += len(pinned)
            b.wait_done(expected, args.bound_s)
        done = fleet_done(b.stop_fleets())
        result = {"nodes": b.nodes, "shards": args.shards, "concurrency": args.concurrency,
                  **phase_figures(submitted, done), "attach_s": round(attach_s, 2),
                  "hub_cpu_us_per_task": round(ticks / TICKS_PER_S * 1e6
                                               / max(1, len(submitted)), 1),
                  **phase, "fold": not args.no_fold, "settle_s": args.settle_s,
                  "submit_many": args.submit_many, "store": args.store,
                  "loadavg_before": load0}
        if idle:
            result["idle"] = idle
        if b.profile is not None:
            result["profile"] = b.profile.summary()
        if fixed:
            result["fixed_rate"] = {"rate_per_s": rate, **phase_figures(fixed, done)}
        if single:
            result["single"] = {**phase_figures(single, done),
                                "submit_to_watch_end_p50_ms": pct(watched, 0.5), **single_cpu}
        if pinned:
            result["single_pinned"] = phase_figures(pinned, done)
        return result


def shards(args: argparse.Namespace) -> dict[str, Any]:
    """steady's maximum-rate phase with 1 and with 2 shards: CPU-µs per task, spread."""
    out: dict[str, Any] = {"nodes": 0, "tasks": args.tasks, "concurrency": args.concurrency}
    for n in args.shard_counts:
        with running_hub(n) as b:
            b.start_fleets(args.nodes, args.fleets, args.bound_s,
                           extra=fleet_extra(args))
            b.wait_attached(args.bound_s)
            spread = b.shard_nodes()
            submitted, _, ticks, phase = run_max_phase(b, args, 0)
            done = fleet_done(b.stop_fleets())
            even = b.nodes / n
            out["nodes"] = b.nodes
            out[f"shards_{n}"] = {
                **phase_figures(submitted, done), "nodes_per_shard": spread,
                "spread_max_dev_pct": round(max(abs(s - even) for s in spread) / even * 100, 1),
                **phase,
                "hub_cpu_us_per_task": round(ticks / TICKS_PER_S * 1e6 / max(1, len(submitted)),
                                             1)}
    out["counts"] = list(args.shard_counts)
    one, two = out["shards_1"], out["shards_2"]
    out["cpu_per_task_ratio_2_vs_1"] = round(two["hub_cpu_us_per_task"]
                                             / one["hub_cpu_us_per_task"], 3)
    out["spread_max_dev_pct"] = two["spread_max_dev_pct"]
    return out


# -- hold and storm -------------------------------------------------------------

def hold_and_storm(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """``hold``: attached, heartbeating, no tasks — hub RSS and CPU. ``storm``: every
    fleet process is SIGKILLed and restarted at once — seconds until all re-attached."""
    extra = ["--heartbeat-interval-ms", str(args.heartbeat_ms)]
    with running_hub(args.shards, extra) as b:
        b.start_fleets(args.nodes, args.fleets, args.bound_s)
        attach_s = b.wait_attached(args.bound_s)
        wait_until(lambda: b.attached_at_hub() >= b.nodes, args.bound_s,
                   "the hub to list the fleet attached", interval_s=0.5)
        pids = b.hub_pids()
        # Steady state, not the attach's tail: the hub asks for a longer heartbeat
        # interval as the fleet grows, and a node takes it from its next heartbeat ack,
        # up to one floor interval (plus jitter) after it attached.
        time.sleep(2 * args.heartbeat_ms / 1000)  # a settling period, not a synchronisation
        cpu0, t0 = cpu_ticks(pids), time.monotonic()
        time.sleep(args.seconds)  # the measurement window itself, not a synchronisation
        cpu1, t1 = cpu_ticks(pids), time.monotonic()
        rss = rss_mib(pids)
        hold = {"nodes": b.nodes, "heartbeat_interval_ms": args.heartbeat_ms,
                "settle_s": round(2 * args.heartbeat_ms / 1000, 1),
                "hub_rss_mib": round(rss, 1),
                "hub_rss_kib_per_node": round(rss * 1024 / max(1, b.nodes), 1),
                "hub_cpu_pct": round((cpu1 - cpu0) / TICKS_PER_S / (t1 - t0) * 100, 2),
                "duration_s": round(t1 - t0, 1), "first_attach_s": round(attach_s, 2),
                "hub_processes": len(pids)}
        fleets = len(b.fleets)
        b.stop_fleets(kill=True)
        wait_until(lambda: b.attached_at_hub() == 0, 120,
                   "the hub to notice the fleet is gone", interval_s=0.2)
        t_storm = time.monotonic()
        b.start_fleets(b.nodes, fleets, args.bound_s, enrolled=True)
        storm_s = b.wait_attached(args.bound_s)
        hub_s = time.monotonic() - t_storm
        reports = b.stop_fleets()
        storm = {"nodes": b.nodes, "seconds_to_all_attached": round(storm_s, 2),
                 "seconds_to_all_attached_incl_fleet_start": round(hub_s, 2),
                 "failed_attempts": sum(r["attach_failures"] for r in reports),
                 "retry_later": sum(r["retry_later"] for r in reports),
                 "attach_attempts": sum(r["attach_attempts"] for r in reports)}
        return {"hold": hold, "storm": storm}


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
        await asyncio.sleep(seconds)  # the server's lifetime bound; the parent ends it sooner
        await server.stop(0)

    uvloop.run(main())


def _echo_clients(port: int, streams: int, seconds: float,
                  out: "multiprocessing.Queue[tuple[int, list[float]]]") -> None:
    async def main() -> tuple[int, list[float]]:
        total = 0
        sample: list[float] = []
        end = time.monotonic() + seconds

        async def one() -> None:
            nonlocal total
            options = [("grpc.use_local_subchannel_pool", 1)]
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as ch:
                chat: Any = ch.stream_stream("/bench.Echo/Chat", request_serializer=lambda b: b,
                                             response_deserializer=lambda b: b)
                call = chat()
                first = True  # its time includes the connect: not a round trip
                while (t0 := time.monotonic()) < end:
                    await call.write(b"x" * 64)
                    await call.read()
                    total += 1
                    if first:
                        first = False
                    elif total % 16 == 0:
                        sample.append((time.monotonic() - t0) * 1000)
                await call.done_writing()

        await asyncio.gather(*(one() for _ in range(streams)), return_exceptions=True)
        return total, sample

    out.put(uvloop.run(main()))


def ceiling(args: argparse.Namespace) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    port_q: multiprocessing.Queue[int] = ctx.Queue()
    server = ctx.Process(target=_echo_server, args=(port_q, args.seconds + 120))
    server.start()
    try:
        port = port_q.get(timeout=30)
        out: multiprocessing.Queue[tuple[int, list[float]]] = ctx.Queue()
        per = args.nodes // args.fleets
        clients = [ctx.Process(target=_echo_clients, args=(port, per, args.seconds, out))
                   for _ in range(args.fleets)]
        for c in clients:
            c.start()
        results = [out.get(timeout=args.seconds + 120) for _ in clients]
        for c in clients:
            c.join(30)
    finally:
        server.terminate()
        server.join(30)
    totals = sum(n for n, _ in results)
    sample = [x for _, s in results for x in s]
    return {"nodes": per * args.fleets, "duration_s": args.seconds,
            "tasks_per_s": round(totals / args.seconds, 1), "round_trips": totals,
            "p50_ms": pct(sample, 0.5), "p99_ms": pct(sample, 0.99),
            "p999_ms": pct(sample, 0.999)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Cortex scenarios against the real cortexd")
    p.add_argument("scenario", choices=["steady", "ceiling", "hold", "shards", "peer", "flood"],
                   help="hold also runs storm on the same fleet")
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--fleets", type=int, default=2)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--tasks", type=int, default=5000)
    p.add_argument("--concurrency", type=int, default=256)
    p.add_argument("--fixed-s", type=float, default=10.0,
                   help="steady: seconds at half the maximum rate (0: skip)")
    p.add_argument("--single", type=int, default=200,
                   help="steady: tasks one at a time, for single-task latency (0: skip)")
    p.add_argument("--single-pinned", type=int, default=0,
                   help="steady: then as many one at a time, all on one node (0: skip)")
    p.add_argument("--idle-s", type=float, default=0.0,
                   help="steady: after the settle, seconds of no task: the fleet's idle cost")
    p.add_argument("--settle-s", type=float, default=0.0,
                   help="steady: seconds to wait after the fleet attached, before measuring")
    p.add_argument("--output-bytes", type=int, default=3)
    p.add_argument("--no-fold", action="store_true",
                   help="simulated nodes send Started, Output, Finished apart (as before "
                   "issue 9)")
    p.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite",
                   help="steady: the hub's store (postgresql: a schema at CORTEX_BENCH_PG)")
    p.add_argument("--shard-counts", type=int, nargs="+", default=[1, 2],
                   help="shards: the shard counts to run (1 and 2 at least)")
    p.add_argument("--submit-many", type=int, default=0, metavar="N",
                   help="max-rate phase: SubmitMany calls of up to N tasks (0: Submit)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--heartbeat-ms", type=int, default=5000)
    p.add_argument("--bound-s", type=float, default=300.0, help="hard bound on a run")
    p.add_argument("--name", help="key in latest.json (default: the scenario)")
    p.add_argument("--profile-dir", help="steady: py-spy the hub during the max-rate phase")
    p.add_argument("--out", type=Path, default=RESULTS, help="result file to merge into")
    flood = p.add_argument_group("flood")
    flood.add_argument("--stream-bps", type=int, default=15_000)
    flood.add_argument("--prompt-every-s", type=float, default=5.0)
    flood.add_argument("--watchers", type=int, default=100)
    flood.add_argument("--drain-s", type=float, default=90.0,
                       help="flood: bound on the wait after --seconds of printing")
    return p


def run(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Run one scenario; {name in latest.json: figures}."""
    if args.scenario == "hold":
        return hold_and_storm(args)
    if args.scenario == "peer":
        from bench.peer import peer
        return {args.name or "peer": peer(args)}
    if args.scenario == "flood":
        from bench.flood import flood
        return {args.name or "flood": flood(args)}
    fn = {"steady": steady, "ceiling": ceiling, "shards": shards}[args.scenario]
    return {args.name or args.scenario: fn(args)}


def main() -> None:
    args = parser().parse_args()
    for name, result in run(args).items():
        print(name, json.dumps(result, indent=2), flush=True)
        save(name, result, args.out)


if __name__ == "__main__":
    main()
