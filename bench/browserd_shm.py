"""A 5 MiB result handed from browserd's side to the node agent's: /dev/shm vs inline.

Both ends are the real code: the server side answers with ``browserd.wire`` frames whose
``data`` is the bytes inline or a ``browserd.shm`` reference (``shm.put``: the write into
tmpfs with its sha256 in a second thread), in a separate process; the client is
``browserd.client.BrowserdClient``. Three ways, each timed from the request to the node
agent's reply frames built (``nodeagent.browsertool.data_frames``: the 256 KiB pieces it
sends to the hub), which is where the bytes are going:

- ``inline``: the bytes in the frame (the client hashes them for the hub);
- ``shm``: the node agent's way, a zero-copy client (``shm.take_view``: open, unlink, map;
  the pieces are cut from the mapping, the writer's sha256 passed on);
- ``shm_copy``: the bytes-returning client (``shm.take``: map, sha256, copy out).

The payload is 5 MiB of random bytes (a PNG does not compress further). Each way runs
``--rounds`` calls; figures are the median and best call, the client's and the server's
CPU per call (from /proc), and the copies of the payload per call by construction (not
measured): inline 6 (msgpack pack, header + body join, socket write into the kernel,
kernel to the reader's buffer, ``readexactly``, msgpack unpack), shm 1 (the write into
tmpfs), shm_copy 2 (+ the copy out of the mapping); plus, for all three, the one copy
into the 256 KiB pieces that protobuf needs.

    .venv/bin/python -m bench.browserd_shm [--rounds 30] [--out bench/results/browserd_shm.json]
"""

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import machine
from browserd import shm, wire
from browserd.client import BrowserdClient
from nodeagent.browsertool import data_frames

SIZE = 5 * 1024 * 1024


def _serve(path: str, ready: Any) -> None:
    blob = os.urandom(SIZE)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from browserd.server import peer_pid
        pid = peer_pid(writer.get_extra_info("socket"))
        while (req := await wire.read_frame(reader, 64 << 20)) is not None:
            data: Any = blob if req["op"] == "inline" else shm.put(blob, pid)
            writer.write(wire.encode({"id": req["id"], "ok": True, "result": {"data": data}},
                                     64 << 20))
            await writer.drain()

    async def main() -> None:
        server = await asyncio.start_unix_server(handle, path=path)
        ready.set()
        async with server:
            await server.serve_forever()
    asyncio.run(main())


def _cpu_ms(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


COPIES = {"inline": 6, "shm": 1, "shm_copy": 2}


async def measure(path: Path, rounds: int, server_pid: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for way in ("inline", "shm", "shm_copy"):
        client = BrowserdClient(path, zero_copy=way == "shm")
        await client.connect()
        op = "inline" if way == "inline" else "shm"
        try:
            await client.call(op)  # warm-up
            times, call_only = [], []
            cpu0, server0 = time.process_time(), _cpu_ms(server_pid)
            for _ in range(rounds):
                t = time.perf_counter()
                r = await client.call(op)
                t_call = time.perf_counter()
                data = r["data"]
                frames = data_frames(1, {}, data, r.get("handoff", {}).get("sha256", ""))
                if isinstance(data, memoryview):
                    data.release()
                times.append((time.perf_counter() - t) * 1000)
                call_only.append((t_call - t) * 1000)
                assert sum(len(f.call_reply.data) for f in frames) == SIZE
            out[way] = {"median_ms": round(statistics.median(times), 3),
                        "best_ms": round(min(times), 3),
                        "call_only_median_ms": round(statistics.median(call_only), 3),
                        "client_cpu_ms_per_call": round(
                            (time.process_time() - cpu0) * 1000 / rounds, 3),
                        "server_cpu_ms_per_call": round(
                            (_cpu_ms(server_pid) - server0) / rounds, 3),
                        "payload_copies": COPIES[way]}
        finally:
            await client.close()
    out["ratio_shm_over_inline"] = round(out["shm"]["median_ms"] / out["inline"]["median_ms"], 3)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--out", default="bench/results/browserd_shm.json")
    ns = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "s.sock"
        ctx = mp.get_context("spawn")
        ready = ctx.Event()
        proc = ctx.Process(target=_serve, args=(str(path), ready), daemon=True)
        proc.start()
        try:
            ready.wait(30)
            assert proc.pid is not None
            figures = asyncio.run(measure(path, min(ns.rounds, 500), proc.pid))
        finally:
            proc.kill()
            proc.join()
    result = {"bench": "browserd_shm", "payload_bytes": SIZE, "rounds": ns.rounds,
              "machine": machine.describe(), "load_average": os.getloadavg(), **figures}
    Path(ns.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
