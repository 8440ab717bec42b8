"""The control process's per-task path without sockets: CPU and store writes per task.

    python -m bench.hubpath [--tasks 5000] [--nodes 1000] [--concurrency 256] [--runs 5]

A real ``Hub`` (the control process's layers) on a real SQLite store, with ``--nodes``
attached nodes whose shard is a sink in this process: tasks go in through the task
service (what the Control servicer calls after validating), each envelope the hub sends
is answered by the node's folded ``TaskFinished`` (3 bytes of output inside, as a task
that ends quickly sends it), and a task is done at its ``FinishedAck``. At most
``--concurrency`` tasks are unfinished. What it leaves out is gRPC and the rings (the
shards' part and the unary RPC's own cost), so what it measures is the part of a task's
control-process CPU that the hub's own code and store decide. It reports, per task, the
process's CPU (``time.process_time``: the event loop and the store thread) and the store
writes and commits (group-commit batches). CPU per task is the minimum over ``--runs``
runs: on a shared machine the least disturbed run is the closest to the cost.
"""

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cortex.v1 import node_pb2
from cortexd import config
from cortexd.control.hub import Hub
from cortexd.control.state import NodeState
from cortexd.ipc import messages as m
from cortexd.serializers.envelope import InlineEncoder
from cortexd.store import NodeRow, TaskRow
from cortexd.store.sqlite import SQLiteStore


class Sink:
    """A shard as the control process sees it: records out; envelopes are answered."""

    def __init__(self, answer: "asyncio.Queue[tuple[str, int, bytes]]") -> None:
        self.answer = answer
        self.acks = 0
        self.acked = asyncio.Event()

    def send_nowait(self, record: bytes) -> bool:
        msg = m.unpack(record)
        if msg[0] != m.SEND:
            return True
        frame = node_pb2.HubFrame.FromString(msg[3])
        if frame.HasField("task"):
            env = node_pb2.TaskEnvelope.FromString(frame.task.body)
            fin = node_pb2.NodeFrame(finished=node_pb2.TaskFinished(
                task_id=env.task_id, attempt=env.attempt, exit_code=0,
                kind=node_pb2.FINISH_KIND_EXITED, output_end=3, output=b"ok\n"))
            self.answer.put_nowait((env.node_id, env.session_epoch, fin.SerializeToString()))
        elif frame.HasField("finished_ack"):
            self.acks += 1
            self.acked.set()
        return True

    async def send(self, record: bytes) -> None:
        self.send_nowait(record)


async def one_run(tasks: int, nodes: int, concurrency: int, folder: Path) -> dict[str, Any]:
    settings = config.load(None, {"insecure_loopback": True}, environ={})
    store = SQLiteStore(str(folder / "c.db"))
    await store.open()
    hub = Hub(settings, store, InlineEncoder(Ed25519PrivateKey.generate(), 60_000), "bench")
    st = hub.state
    answer: asyncio.Queue[tuple[str, int, bytes]] = asyncio.Queue()
    sink = Sink(answer)
    st.links[0] = sink  # type: ignore[assignment]
    for i in range(nodes):
        epoch = await store.mint_epoch()
        await store.node_attached(NodeRow(f"n{i}", epoch, {}, 4, "", 0, True, 1))
        st.nodes[f"n{i}"] = NodeState(f"n{i}", epoch, 0, {}, 4, attached=True)
    loop = asyncio.get_running_loop()
    background = [loop.create_task(hub.placement.run())]

    async def nodes_answer() -> None:
        while True:
            node_id, epoch, raw = await answer.get()
            loop.create_task(hub.attempts.on_frame(node_id, epoch,
                                                   node_pb2.NodeFrame.FromString(raw)))

    background.append(loop.create_task(nodes_answer()))
    writes, batches = store.writer.writes, store.writer.batches
    cpu, wall = time.process_time(), time.perf_counter()
    submitted = 0
    deadline = time.monotonic() + 300
    while sink.acks < tasks and time.monotonic() < deadline:
        room = min(concurrency - (submitted - sink.acks), tasks - submitted)
        if room > 0:
            batch = [TaskRow(task_id=f"t-{submitted + k:020d}", command="true",
                             created_ms=1, updated_ms=1) for k in range(room)]
            submitted += room
            await asyncio.gather(*(hub.tasks.submit(t) for t in batch))
            continue
        sink.acked.clear()
        await asyncio.wait_for(sink.acked.wait(), 10)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    done = sink.acks
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    result = {"tasks": done, "cpu_us_per_task": round(cpu / max(done, 1) * 1e6, 1),
              "tasks_per_s": round(done / wall, 1),
              "store_writes_per_task": round((store.writer.writes - writes) / max(done, 1), 2),
              "commits_per_task": round((store.writer.batches - batches) / max(done, 1), 3)}
    await store.close()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hubpath", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=5000)
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=256)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="cortex-hubpath-") as d:
            runs.append(uvloop.run(one_run(args.tasks, args.nodes, args.concurrency,
                                           Path(d))))
    best = min(runs, key=lambda r: r["cpu_us_per_task"])
    print(json.dumps({"best": best, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
