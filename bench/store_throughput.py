"""Store throughput through the group commit writer, on SQLite and on PostgreSQL.

    python -m bench.store_throughput [--out FILE] [--pg URL] [--writes N]

For each backend and each number of concurrent writers (1 = every write waits
for the previous one's commit, as a single caller would; more = writes queue
while a batch commits and share the next transaction), it times:

- **transitions/s**: tasks walked QUEUED → ASSIGNED → RUNNING → SUCCEEDED, each
  a conditional write recorded in ``transitions``;
- **output rows/s**: 256-byte chunks appended to RUNNING tasks, each caller
  appending sequentially to its own task (as one node's stream does).

Every figure is for committed writes (a caller's await returns after its batch
commits). Tasks are created before the clock starts. PostgreSQL runs in a
schema created for the run and dropped after; SQLite in a temporary directory.
Results go to ``bench/results/store.json`` with the machine description.
"""

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg

from bench.machine import describe
from cortexd.lifecycle import State
from cortexd.store import Store, TaskRow, open_store

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "store.json"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
CONCURRENCY = (1, 16, 128, 512)
CHUNK = b"x" * 256


def _ids(prefix: str, n: int) -> list[str]:
    return [f"t-{prefix}{i:016x}" for i in range(n)]


async def _create(store: Store, ids: list[str]) -> None:
    for group in range(0, len(ids), 256):
        await asyncio.gather(*(store.create_task(TaskRow(task_id=i, command="true",
                                                         created_ms=1, updated_ms=1))
                               for i in ids[group:group + 256]))


async def _transitions(store: Store, writers: int, tasks: int, tag: str) -> dict[str, Any]:
    ids = _ids(tag, tasks)
    await _create(store, ids)
    queue = list(ids)

    async def writer() -> int:
        done = 0
        while queue:
            t = queue.pop()
            await store.transition(t, attempt=0, node_epoch=0, to=State.ASSIGNED,
                                   new_attempt=True, node_id="n1", new_node_epoch=1, now_ms=2)
            await store.transition(t, attempt=1, node_epoch=1, to=State.RUNNING, now_ms=3)
            await store.transition(t, attempt=1, node_epoch=1, to=State.SUCCEEDED,
                                   exit_code=0, now_ms=4)
            done += 3
        return done

    return await _timed(store, [writer() for _ in range(writers)])


async def _appends(store: Store, writers: int, rows: int, tag: str) -> dict[str, Any]:
    ids = _ids(tag, writers)
    await _create(store, ids)
    for t in ids:
        await store.transition(t, attempt=0, node_epoch=0, to=State.ASSIGNED, new_attempt=True,
                               node_id="n1", new_node_epoch=1, now_ms=2)
        await store.transition(t, attempt=1, node_epoch=1, to=State.RUNNING, now_ms=3)
    per = max(1, rows // writers)

    async def writer(t: str) -> int:
        for k in range(per):
            before, after = await store.append_output(t, 1, 1, k * len(CHUNK), CHUNK)
            assert after - before == len(CHUNK)
        return per

    return await _timed(store, [writer(t) for t in ids])


async def _timed(store: Store, coros: list[Any]) -> dict[str, Any]:
    writer = store.writer  # type: ignore[attr-defined]
    b0, w0 = writer.batches, writer.writes
    t0 = time.perf_counter()
    counts = await asyncio.gather(*coros)
    elapsed = time.perf_counter() - t0
    n, batches = sum(counts), writer.batches - b0
    assert writer.writes - w0 == n
    return {"writes": n, "seconds": round(elapsed, 3), "per_s": round(n / elapsed),
            "transactions": batches, "mean_batch": round(n / max(batches, 1), 1)}


async def _backend(url: str, writes: int, delay_ms: float) -> list[dict[str, Any]]:
    out = []
    store = open_store(url, flush_delay_ms=delay_ms)
    await store.open()
    try:
        for c in CONCURRENCY:
            n = writes if c > 1 else max(500, writes // 10)  # the serial case is slow
            tag = uuid.uuid4().hex[:4]
            tr = await _transitions(store, c, max(c, n // 3), tag)
            ap = await _appends(store, c, n, tag + "a")
            out.append({"concurrency": c, "flush_delay_ms": delay_ms, "transitions": tr,
                        "output_appends": ap})
            print(f"{url.split(':')[0]:<10} delay {delay_ms:g} ms  writers {c:>4}: "
                  f"{tr['per_s']:>7,} transitions/s (batch {tr['mean_batch']:>5}), "
                  f"{ap['per_s']:>7,} output rows/s (batch {ap['mean_batch']:>5})", flush=True)
    finally:
        await store.close()
    return out


async def _autocommit_baseline(url: str, rows: int) -> dict[str, Any]:
    """One-row autocommit INSERTs on PostgreSQL, the cost group commit avoids."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("CREATE TEMP TABLE bench_rows (id bigint, data bytea)")
        t0 = time.perf_counter()
        for i in range(rows):
            await conn.execute("INSERT INTO bench_rows VALUES (%s, %s)", (i, CHUNK))
        elapsed = time.perf_counter() - t0
    return {"rows": rows, "seconds": round(elapsed, 3), "per_s": round(rows / elapsed)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    pg_url = f"{args.pg}{'&' if '?' in args.pg else '?'}options=-csearch_path%3D{schema}"
    async with await psycopg.AsyncConnection.connect(args.pg, autocommit=True) as admin:
        server = (await (await admin.execute("SHOW server_version")).fetchone() or ["?"])[0]
        sync_commit = (await (await admin.execute("SHOW synchronous_commit")).fetchone()
                       or ["?"])[0]
        await admin.execute(f"CREATE SCHEMA {schema}")
    results: dict[str, Any] = {}
    try:
        results["postgresql_autocommit_one_row_inserts"] = await _autocommit_baseline(
            pg_url, 2000)
        print(f"postgresql one-row autocommit INSERTs: "
              f"{results['postgresql_autocommit_one_row_inserts']['per_s']:,}/s", flush=True)
        results["postgresql"] = []
        for delay in args.delays:
            results["postgresql"] += await _backend(pg_url, args.writes, delay)
    finally:
        async with await psycopg.AsyncConnection.connect(args.pg, autocommit=True) as admin:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = []
        for delay in args.delays:
            results["sqlite"] += await _backend(f"sqlite:///{tmp}/s{delay}.db", args.writes,
                                                delay)
    return {"machine": {**describe(), "psycopg": metadata.version("psycopg"),
                        "postgresql_server": server,
                        "postgresql_synchronous_commit": sync_commit,
                        "sqlite_synchronous": "NORMAL (WAL)"},
            "chunk_bytes": len(CHUNK), "max_batch": 512, "results": results}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--pg", default=DEFAULT_PG, help=f"admin URL (default {DEFAULT_PG})")
    p.add_argument("--writes", type=int, default=12_000, help="writes per case")
    p.add_argument("--delays", type=float, nargs="+", default=[0.0, 2.0],
                   help="flush_delay_ms values to run (default 0 2)")
    args = p.parse_args()
    t0 = time.perf_counter()
    report = asyncio.run(main_async(args))
    report["run_seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out} ({report['run_seconds']} s)")


if __name__ == "__main__":
    main()
