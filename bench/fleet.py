"""A fleet process: thousands of simulated nodes (bench/simnode.py) on the real protocol.

Each node has its own channel (and so its own TCP connection), so that the kernel
spreads them over the shards as it would real nodes. Run one fleet process::

    python -m bench.fleet --hub 127.0.0.1:7700[,127.0.0.1:7701] --hub-key STATE/hub.pub \\
        --tokens FILE --report OUT.json [--status STATUS.json] [--task-s 0] \\
        [--output-bytes 3] [--stream-bps 15000 --stream-s 60 --prompt-every-s 5] \\
        [--seconds 60]

``--tokens`` is a file of ``node_id token`` lines (see :func:`enroll`). ``--hub`` may
list several hub addresses; a node moves to the next one when a connect fails or its
stream drops.

``--status`` is rewritten (atomically) every ``--status-every-s`` and at once when the
last node attaches: ``{"nodes", "attached", "ever_attached", "all_attached", "done",
...}``; a test or scenario waits on it instead of sleeping. The process writes, when it
ends (SIGTERM, or ``--seconds``), the ``--report`` JSON: the status fields, the monotonic
time at which each task's FinishedAck arrived (the task is then durable at the hub), and
per node the (task_id, attempt) pairs it executed (``executed``), from the node's own
records, so that "no task ran twice" can be checked against them.
"""

import argparse
import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import uvloop

from bench.simnode import FleetStats, SimNode, Workload
from cortex.envelope import EnvelopeVerifier, load_public_key
from cortex.tokens import new_token, token_hash


def enroll(tokens_file: Path, node_ids: list[str], out: Path) -> None:
    """Append node credentials to the hub's token table in one write (fast for 10,000)."""
    pairs = [(node_id, new_token()) for node_id in node_ids]
    with open(tokens_file, "a") as f:
        f.write("".join(f"{n} node {token_hash(t)}\n" for n, t in pairs))
    out.write_text("".join(f"{n} {t}\n" for n, t in pairs))


def status(stats: FleetStats, nodes: int) -> dict[str, Any]:
    return {"nodes": nodes, "attached": stats.attached, "ever_attached": stats.ever_attached,
            "all_attached": stats.attached >= nodes, "done": len(stats.tasks_done),
            "first_attach": stats.first_attach, "last_attach": stats.last_attach,
            "attach_attempts": stats.attach_attempts, "attach_failures": stats.attach_failures,
            "retry_later": stats.retry_later, "dropped": stats.dropped,
            "rejected": stats.rejected, "already_ran": stats.already_ran,
            "killed_by_verdict": stats.killed_by_verdict,
            "kept_by_verdict": stats.kept_by_verdict, "bytes_produced": stats.bytes_produced,
            "bytes_sent": stats.bytes_sent, "bytes_acked": stats.bytes_acked,
            "prompts_sent": stats.prompts_sent, "heartbeats": stats.heartbeats,
            "time": time.monotonic()}


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


async def _write_status(path: Path, stats: FleetStats, nodes: int, every_s: float,
                        stop: asyncio.Event) -> None:
    all_attached = False
    while not stop.is_set():
        # Poll the counter often (cheap) but write only every every_s or on the edge
        # "everybody is attached", which is what a waiting test needs to see at once.
        deadline = time.monotonic() + every_s
        while time.monotonic() < deadline and not stop.is_set():
            now_all = stats.attached >= nodes
            if now_all != all_attached:
                all_attached = now_all
                break
            await asyncio.sleep(0.05)
        write_json(path, status(stats, nodes))


async def run_fleet(args: argparse.Namespace) -> dict[str, Any]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    key = load_public_key(Path(args.hub_key))
    stats = FleetStats()
    work = Workload(task_s=args.task_s, output=b"x" * args.output_bytes,
                    stream_bps=args.stream_bps, stream_s=args.stream_s,
                    prompt_every_s=args.prompt_every_s, window_bytes=args.window_bytes,
                    fold=not args.no_fold)
    hubs = [h.strip() for h in args.hub.split(",") if h.strip()]
    nodes = []
    for line in Path(args.tokens).read_text().splitlines():
        node_id, token = line.split()
        nodes.append(SimNode(node_id, token, hubs, EnvelopeVerifier(key, node_id), stats,
                             work))
    started = time.monotonic()
    runs = [asyncio.create_task(n.run(stop)) for n in nodes]
    writer = None
    if args.status:
        writer = asyncio.create_task(_write_status(Path(args.status), stats, len(nodes),
                                                   args.status_every_s, stop))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), args.seconds)
    stop.set()
    for r in runs:
        r.cancel()
    await asyncio.gather(*runs, return_exceptions=True)
    if writer is not None:
        await asyncio.gather(writer, return_exceptions=True)
    return {**status(stats, len(nodes)), "started": started, "tasks_done": stats.tasks_done,
            "executed": {n.node_id: [list(k) for k in n.executed] for n in nodes}}


def main() -> None:
    p = argparse.ArgumentParser(description="Simulated nodes on the real node protocol")
    p.add_argument("--hub", required=True, help="HOST:PORT[,HOST:PORT...]")
    p.add_argument("--hub-key", required=True)
    p.add_argument("--tokens", required=True)
    p.add_argument("--report", required=True)
    p.add_argument("--status", help="status JSON, rewritten while running")
    p.add_argument("--status-every-s", type=float, default=1.0)
    p.add_argument("--task-s", type=float, default=0.0)
    p.add_argument("--output-bytes", type=int, default=3)
    p.add_argument("--stream-bps", type=int, default=0,
                   help="print at this rate (bytes/s) for --stream-s instead")
    p.add_argument("--stream-s", type=float, default=60.0)
    p.add_argument("--prompt-every-s", type=float, default=0.0,
                   help="while streaming, a PromptEvent this often")
    p.add_argument("--window-bytes", type=int, default=1 << 20,
                   help="unacknowledged output per task (nodeagent: output_window_bytes)")
    p.add_argument("--no-fold", action="store_true",
                   help="Started, Output and Finished apart even when the hub folds them")
    p.add_argument("--seconds", type=float, default=600.0, help="bound on the run")
    args = p.parse_args()
    report = uvloop.run(run_fleet(args))
    write_json(Path(args.report), report)


if __name__ == "__main__":
    main()
