"""Simulated nodes that speak the real node protocol, thousands per process.

A :class:`SimNode` does what nodeagent does on the wire and nothing else: it
attaches with its own credential, sends Hello, heartbeats at the interval the hub
asks for, verifies every envelope with the same ``EnvelopeVerifier`` (signature,
node id, session epoch, expiry, nonce), and answers each task with Started, its
output (``output_bytes`` of it, after ``task_s`` seconds) and Finished, honouring
the hub's cumulative acks. It runs no process. The hub cannot tell it from a real
node, so the figures are the hub's.

Each node has its own channel (and so its own TCP connection), so that the
kernel spreads them over the shards as it would real nodes.

Run one fleet process::

    python -m bench.fleet --hub 127.0.0.1:7700 --hub-key STATE/hub.pub \\
        --tokens FILE --report OUT.json [--task-s 0] [--output-bytes 3] [--seconds 60]

``--tokens`` is a file of ``node_id token`` lines (see :func:`enroll`). The
process writes, when it ends (SIGTERM, or ``--seconds``), a JSON report with the
monotonic time at which each task's FinishedAck arrived (the task is then
durable at the hub), and attach statistics.
"""

import argparse
import asyncio
import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import uvloop

from cortex.envelope import EnvelopeVerifier, load_public_key
from cortex.errors import EnvelopeError
from cortex.tokens import bearer, new_token, token_hash
from cortex.v1 import node_pb2

ATTACH = "/cortex.v1.NodeLink/Attach"
ENC = node_pb2.NodeFrame.SerializeToString
DEC = node_pb2.HubFrame.FromString


def enroll(tokens_file: Path, node_ids: list[str], out: Path) -> None:
    """Append node credentials to the hub's token table in one write (fast for 10,000)."""
    pairs = [(node_id, new_token()) for node_id in node_ids]
    with open(tokens_file, "a") as f:
        f.write("".join(f"{n} node {token_hash(t)}\n" for n, t in pairs))
    out.write_text("".join(f"{n} {t}\n" for n, t in pairs))


@dataclass
class FleetStats:
    attached: int = 0
    attach_attempts: int = 0
    attach_failures: int = 0
    first_attach: float = 0.0
    last_attach: float = 0.0
    tasks_done: dict[str, float] = field(default_factory=dict)
    rejected: int = 0


class SimNode:
    def __init__(self, node_id: str, token: str, hub: str, verifier: EnvelopeVerifier,
                 stats: FleetStats, task_s: float, output: bytes) -> None:
        self.node_id = node_id
        self.token = token
        self.hub = hub
        self.verifier = verifier
        self.stats = stats
        self.task_s = task_s
        self.output = output
        self.epoch = 0
        self.lock = asyncio.Lock()

    async def run(self, stop: asyncio.Event) -> None:
        delay = 0.2
        while not stop.is_set():
            self.stats.attach_attempts += 1
            try:
                await self._session(stop)
                delay = 0.2
            except (grpc.aio.AioRpcError, ConnectionError, TimeoutError) as e:
                self.stats.attach_failures += 1
                if isinstance(e, grpc.aio.AioRpcError) and e.code() == grpc.StatusCode.CANCELLED:
                    return
            if stop.is_set():
                return
            await asyncio.sleep(delay * (0.5 + os.urandom(1)[0] / 255))
            delay = min(delay * 2, 10.0)

    async def _session(self, stop: asyncio.Event) -> None:
        options = [("grpc.use_local_subchannel_pool", 1), ("grpc.keepalive_time_ms", 30_000)]
        async with grpc.aio.insecure_channel(self.hub, options=options) as channel:
            call = channel.stream_stream(ATTACH, request_serializer=ENC,
                                         response_deserializer=DEC)(
                metadata=bearer(self.token))
            hello = node_pb2.Hello(node_id=self.node_id, capacity=64, agent_version="sim",
                                   labels={"os": "linux", "sim": "1"})
            await call.write(node_pb2.NodeFrame(hello=hello))
            first = await asyncio.wait_for(call.read(), 60)
            if first is grpc.aio.EOF or first.WhichOneof("kind") != "welcome":
                raise ConnectionError("no welcome")
            self.epoch = first.welcome.session_epoch
            now = time.monotonic()
            self.stats.attached += 1
            self.stats.first_attach = self.stats.first_attach or now
            self.stats.last_attach = now
            beat = asyncio.create_task(self._heartbeat(call, first.welcome.heartbeat_interval_ms))
            try:
                await self._serve(call, stop)
            finally:
                self.stats.attached -= 1
                beat.cancel()

    async def _write(self, call: Any, frame: node_pb2.NodeFrame) -> None:
        async with self.lock:
            await call.write(frame)

    async def _heartbeat(self, call: Any, interval_ms: int) -> None:
        seq = 0
        while True:
            await asyncio.sleep(interval_ms / 1000 * (0.9 + 0.2 * os.urandom(1)[0] / 255))
            seq += 1
            await self._write(call, node_pb2.NodeFrame(heartbeat=node_pb2.Heartbeat(seq=seq)))

    async def _serve(self, call: Any, stop: asyncio.Event) -> None:
        while not stop.is_set():
            frame = await call.read()
            if frame is grpc.aio.EOF:
                raise ConnectionError("hub closed the stream")
            kind = frame.WhichOneof("kind")
            if kind == "task":
                asyncio.create_task(self._run_task(call, frame.task))
            elif kind == "finished_ack":
                self.stats.tasks_done.setdefault(frame.finished_ack.task_id, time.monotonic())

    async def _run_task(self, call: Any, signed: node_pb2.SignedEnvelope) -> None:
        try:
            env = self.verifier.verify(signed, self.epoch)
        except EnvelopeError as e:
            self.stats.rejected += 1
            await self._write(call, node_pb2.NodeFrame(rejected=node_pb2.TaskRejected(
                code=e.code, reason=str(e))))
            return
        tid, att = env.task_id, env.attempt
        await self._write(call, node_pb2.NodeFrame(started=node_pb2.TaskStarted(
            task_id=tid, attempt=att, pid=1)))
        if self.task_s:
            await asyncio.sleep(self.task_s)
        if self.output:
            await self._write(call, node_pb2.NodeFrame(output=node_pb2.TaskOutput(
                task_id=tid, attempt=att, offset=0, data=self.output)))
        await self._write(call, node_pb2.NodeFrame(finished=node_pb2.TaskFinished(
            task_id=tid, attempt=att, kind=node_pb2.FINISH_KIND_EXITED, exit_code=0,
            output_end=len(self.output))))


async def run_fleet(args: argparse.Namespace) -> dict[str, Any]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    key = load_public_key(Path(args.hub_key))
    stats = FleetStats()
    nodes = []
    for line in Path(args.tokens).read_text().splitlines():
        node_id, token = line.split()
        nodes.append(SimNode(node_id, token, args.hub, EnvelopeVerifier(key, node_id), stats,
                             args.task_s, b"x" * args.output_bytes))
    started = time.monotonic()
    runs = [asyncio.create_task(n.run(stop)) for n in nodes]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), args.seconds)
    stop.set()
    for r in runs:
        r.cancel()
    await asyncio.gather(*runs, return_exceptions=True)
    return {"nodes": len(nodes), "started": started, "first_attach": stats.first_attach,
            "last_attach": stats.last_attach, "attach_attempts": stats.attach_attempts,
            "attach_failures": stats.attach_failures, "rejected": stats.rejected,
            "tasks_done": stats.tasks_done}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hub", required=True)
    p.add_argument("--hub-key", required=True)
    p.add_argument("--tokens", required=True)
    p.add_argument("--report", required=True)
    p.add_argument("--task-s", type=float, default=0.0)
    p.add_argument("--output-bytes", type=int, default=3)
    p.add_argument("--seconds", type=float, default=600.0, help="bound on the run")
    args = p.parse_args()
    report = uvloop.run(run_fleet(args))
    tmp = Path(args.report + ".tmp")
    tmp.write_text(json.dumps(report))
    os.replace(tmp, args.report)


if __name__ == "__main__":
    main()
