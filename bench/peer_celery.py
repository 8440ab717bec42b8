"""The Celery app of the ``peer`` scenario: Redis as broker and result backend, a no-op task.

The worker is started by bench/peer.py as ``celery -A bench.peer_celery worker`` with 2
prefork processes. Everything lives in one dedicated Redis database (``PEER_REDIS_URL``,
default db 13), which the scenario flushes before a run and nothing else touches.
"""

import os
import time

from celery import Celery  # type: ignore[import-untyped]

REDIS_URL = os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/13")
QUEUE = "cortex-bench-peer"

app = Celery("cortex_bench_peer", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_default_queue=QUEUE,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=600,
    worker_prefetch_multiplier=16,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop() -> float:
    """The no-op task; returns the monotonic time it ran at (same clock as the client)."""
    return time.monotonic()
