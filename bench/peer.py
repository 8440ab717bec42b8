"""``peer``: steady's workload through Celery 5 with Redis, 2 prefork workers, same run.

The worker (``celery -A bench.peer_celery worker -c 2 -P prefork``) is started here and
ended by its pid; its Redis database is flushed first (only that one). A warm-up task's
result proves the worker consumes before anything is timed. Then ``--tasks`` no-op tasks
go out with at most ``--concurrency`` unfinished (as steady keeps ``--concurrency``
Submits in flight): a task counts as done when its result is in the result backend and
the client has it, which is what steady's FinishedAck means for cortexd (the terminal
state is durable). Then ``--single`` tasks one at a time for the single-task latency.
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench.harness import cpu_ticks, pct
from examples.proctable import descendants

WORKERS = 2


def _worker(log: Path, url: str) -> "subprocess.Popen[bytes]":
    from bench.peer_celery import QUEUE
    env = {**os.environ, "PEER_REDIS_URL": url}
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench.peer_celery", "worker", "-c",
         str(WORKERS), "-P", "prefork", "-Q", QUEUE, "-l", "warning", "--without-gossip",
         "--without-mingle", "--without-heartbeat", "-n", f"bench-{os.getpid()}@localhost"],
        stdin=subprocess.DEVNULL, stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=env)


def _closed_loop(count: int, concurrency: int, deadline: float
                 ) -> tuple[dict[str, float], dict[str, float]]:
    """Keep ``concurrency`` tasks unfinished; {id: sent}, {id: result seen}."""
    from bench.peer_celery import app, noop
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    pending: dict[str, Any] = {}
    backend = app.backend
    i = 0
    while (i < count or pending) and time.monotonic() < deadline:
        while i < count and len(pending) < concurrency:
            r = noop.apply_async()
            sent[r.id] = time.monotonic()
            pending[r.id] = r
            i += 1
        # get_many yields results as they arrive (Redis pub/sub), blocking for the first.
        for task_id, _meta in backend.get_many(set(pending), timeout=60, interval=0.0005,
                                               no_ack=True):
            seen.setdefault(task_id, time.monotonic())
            pending.pop(task_id, None)
            if len(pending) < concurrency // 2 and i < count:
                break  # refill before the rest of this set arrives
    return sent, seen


def peer(args: argparse.Namespace) -> dict[str, Any]:
    from bench.peer_celery import REDIS_URL, app, noop
    url = os.environ.get("PEER_REDIS_URL", REDIS_URL)
    client = redis.Redis.from_url(url)
    client.flushdb()  # only the peer's own database
    log = Path(tempfile.mkdtemp(prefix="cortex-bench-peer-")) / "celery.log"
    worker = _worker(log, url)
    try:
        noop.apply_async().get(timeout=60)  # the worker consumes: everything is up
        pids = [worker.pid, *descendants(worker.pid)]
        deadline = time.monotonic() + args.bound_s
        cpu0 = cpu_ticks(pids)
        sent, seen = _closed_loop(args.tasks, args.concurrency, deadline)
        cpu1 = cpu_ticks(pids)
        lat = [(seen[t] - s) * 1000 for t, s in sent.items() if t in seen]
        span = max(seen.values()) - min(sent.values())
        single: list[float] = []
        for _ in range(args.single):
            if time.monotonic() > deadline:
                break
            t0 = time.monotonic()
            noop.apply_async().get(timeout=60)
            single.append((time.monotonic() - t0) * 1000)
        result = {"nodes": WORKERS, "workers": WORKERS, "broker": "redis", "backend": "redis",
                  "tasks": len(sent), "completed": len(lat), "concurrency": args.concurrency,
                  "duration_s": round(span, 3), "tasks_per_s": round(len(lat) / span, 1),
                  "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99), "p999_ms": pct(lat, 0.999),
                  "worker_cpu_us_per_task": round((cpu1 - cpu0) / os.sysconf("SC_CLK_TCK")
                                                  * 1e6 / max(1, len(lat)), 1),
                  "single": {"tasks": len(single), "p50_ms": pct(single, 0.5),
                             "p99_ms": pct(single, 0.99)}}
        app.close()
        return result
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            for pid in [*descendants(worker.pid), worker.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            worker.wait()
        client.flushdb()
        client.close()
