"""Prometheus figures of every hub process, served as one ``/metrics`` per hub host.

- ``procdir.py``: prometheus_client's multiprocess mode. The supervisor makes one
  directory per cortexd instance (``/dev/shm/cortex-<pid>-metrics``) and puts it in
  ``PROMETHEUS_MULTIPROC_DIR`` before it spawns a child, so every child writes its
  figures to its own mapped files; a child that died is marked dead there (its
  gauges leave, its counters stay, so the totals survive a respawn).
- ``hub.py``: every metric of the hub and the one helper per process kind that
  binds the host (and shard) labels. Labels are hub host, shard, tenant, state
  and bounded reasons: never a node or a task (their number is unbounded).
- ``storewrites.py``: the store's write observer (transitions, latencies, output
  bytes, commit figures).

The exposition itself is prometheus_client's (``cortexd/web/server.py``).
"""
