"""A 5 MiB result handed from browserd's side to the node agent's: /dev/shm vs inline.

Both ends are the real code: the server side answers with ``browserd.wire`` frames whose
``data`` is the bytes inline or a ``browserd.shm`` reference, in a separate process; the
client is ``browserd.client.BrowserdClient`` (which takes the handoff file: map, sha256,
copy out, unlink). The payload is 5 MiB of random bytes (a PNG does not compress
further). Each mode runs ``--rounds`` calls; the figures are the median and best call.
Copies of the payload per call, by construction (counted in the code paths, not
measured): inline 6 (msgpack pack, header + body join, socket write into the kernel,
kernel to the reader's buffer, ``readexactly`` join, msgpack unpack to ``bytes``); /dev/shm
2 (the write into tmpfs, the copy out of the mapping), plus one sha256 pass on each side.

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

SIZE = 5 * 1024 * 1024


def _serve(path: str, ready: Any) -> None:
    blob = os.urandom(SIZE)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from browserd.server import peer_pid
        pid = peer_pid(writer.get_extra_info("socket"))
        while (req := await wire.read_frame(reader)) is not None:
            data: Any = blob if req["op"] == "inline" else shm.put(blob, pid)
            writer.write(wire.encode({"id": req["id"], "ok": True, "result": {"data": data}}))
            await writer.drain()

    async def main() -> None:
        server = await asyncio.start_unix_server(handle, path=path)
        ready.set()
        async with server:
            await server.serve_forever()
    asyncio.run(main())


async def measure(path: Path, rounds: int) -> dict[str, Any]:
    client = BrowserdClient(path)
    await client.connect()
    out: dict[str, Any] = {}
    try:
        for mode in ("inline", "shm"):
            await client.call(mode)  # warm-up
            times = []
            cpu0 = time.process_time()
            for _ in range(rounds):
                t = time.perf_counter()
                r = await client.call(mode)
                times.append((time.perf_counter() - t) * 1000)
                assert len(r["data"]) == SIZE
            out[mode] = {"median_ms": round(statistics.median(times), 3),
                         "best_ms": round(min(times), 3),
                         "client_cpu_ms_per_call": round(
                             (time.process_time() - cpu0) * 1000 / rounds, 3),
                         "payload_copies": 6 if mode == "inline" else 2}
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
            figures = asyncio.run(measure(path, min(ns.rounds, 500)))
        finally:
            proc.kill()
            proc.join()
    result = {"bench": "browserd_shm", "payload_bytes": SIZE, "rounds": ns.rounds,
              "machine": machine.describe(), "load_average": os.getloadavg(), **figures}
    Path(ns.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
