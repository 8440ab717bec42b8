"""Every metric of the hub, by the process that moves it.

Names are the contract with dashboards (``grafana/cortex-hub.json``, checked by
``tests/system/test_system_metrics.py``): rename one only together with them.
Counters are exposed with the ``_total`` suffix. Every metric carries ``hub``
(the host's ``hub_id``); shard figures carry ``shard``; task figures carry
``tenant`` and ``state``. Nothing is labelled by node or task.

Gauges say how the multiprocess aggregate combines processes: ``livesum`` for
figures each live process holds a part of (nodes per shard), ``livemax`` for
figures only one process sets (the control process).
"""

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                     10.0, 30.0, 60.0)
RUN_BUCKETS_S = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
                 4 * 3600.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)

# -- the supervisor -----------------------------------------------------------------
CHILD_RESTARTS = Counter("cortex_child_restarts", "Child processes the supervisor restarted",
                         ["hub", "child"])
WATCHDOG_PINGS = Counter("cortex_watchdog_pings", "WATCHDOG=1 notifications sent to systemd",
                         ["hub"])
RELOADS = Counter("cortex_reloads", "Configuration reloads (SIGHUP), by result",
                  ["hub", "result"])

# -- each shard ---------------------------------------------------------------------
NODES_ATTACHED = Gauge("cortex_nodes_attached", "Node streams attached to a shard",
                       ["hub", "shard"], multiprocess_mode="livesum")
ATTACHES = Counter("cortex_node_attaches", "Node attaches welcomed", ["hub", "shard"])
ATTACH_REJECTIONS = Counter("cortex_node_attach_rejections",
                            "Node attaches refused or told to retry later, by reason",
                            ["hub", "shard", "reason"])
NODE_FRAMES = Counter("cortex_node_frames", "Frames on node streams", ["hub", "shard",
                                                                        "direction"])
SHARD_WRITES = Counter("cortex_shard_writes", "Node frames (Started, output, Finished) a "
                       "shard wrote to the store itself, by outcome: written (its ack and "
                       "its outcome sent from the shard), to_control (refused, or its "
                       "task's frames go to the control process: written there), failed "
                       "(the store failed it: sent to control)", ["hub", "shard", "outcome"])
SHARD_INTAKE = Counter("cortex_shard_intake", "Control API calls on a shard's Control port "
                       "(shard_intake), by outcome: taken (a plain submission's task, "
                       "inserted by the shard) or relayed (a call passed to the control "
                       "process)", ["hub", "shard", "outcome"])
RING_USED = Gauge("cortex_ring_used_bytes", "Bytes waiting in a shard ring",
                  ["hub", "shard", "direction"], multiprocess_mode="livemax")
RING_CAPACITY = Gauge("cortex_ring_capacity_bytes", "Capacity of a shard ring",
                      ["hub", "shard", "direction"], multiprocess_mode="livemax")
RING_FULL_WAITS = Counter("cortex_ring_full_waits",
                          "Sends that found a ring full and waited for room (back-pressure)",
                          ["hub", "shard", "direction"])

# -- the control process --------------------------------------------------------------
TASKS = Gauge("cortex_tasks", "Tasks in an active state, from the store", ["hub", "state"],
              multiprocess_mode="livemax")
TRANSITIONS = Counter("cortex_task_transitions", "Task transitions the store accepted, by the "
                      "state entered", ["hub", "tenant", "state"])
DISPATCH_LATENCY = Histogram("cortex_task_dispatch_latency_seconds",
                             "Submit to dispatch (QUEUED -> ASSIGNED)", ["hub", "tenant"],
                             buckets=LATENCY_BUCKETS_S)
RUN_LATENCY = Histogram("cortex_task_run_seconds",
                        "Dispatch to finish (ASSIGNED -> a terminal state)", ["hub", "tenant"],
                        buckets=RUN_BUCKETS_S)
STORE_COMMIT = Histogram("cortex_store_commit_seconds", "One group-commit batch, flush to "
                         "result", ["hub"], buckets=LATENCY_BUCKETS_S)
STORE_BATCH = Histogram("cortex_store_batch_rows", "Writes per group-commit batch", ["hub"],
                        buckets=BATCH_BUCKETS)
STORE_REACHABLE = Gauge("cortex_store_reachable", "1 while the store answers", ["hub"],
                        multiprocess_mode="livemax")
OUTPUT_BYTES = Counter("cortex_output_bytes", "Task output bytes made durable", ["hub"])
HELD_BACK = Gauge("cortex_output_held_back_bytes", "Output the nodes hold back by their rate "
                  "limit, as last reported", ["hub"], multiprocess_mode="livemax")
HEARTBEAT_INTERVAL = Gauge("cortex_heartbeat_interval_seconds",
                           "Heartbeat interval asked of the nodes", ["hub"],
                           multiprocess_mode="livemax")
SHARDS_ALIVE = Gauge("cortex_shards_alive", "Shard processes alive", ["hub"],
                     multiprocess_mode="livemax")

# -- monitors ---------------------------------------------------------------------------
# The place for the monitors' figures (issue: monitor decisions by source — rule, LLM,
# human — and LLM latency). Define them here beside the others, with the same labels
# rules (hub, tenant, source, decision; never a task), and add their panel to
# grafana/cortex-hub.json.


#: Every reason cortex_node_attach_rejections_total is labelled with (nodelink.py).
REJECTION_REASONS = ("credential", "identity", "no_hello", "bad_hello", "retry_rate",
                     "retry_pending", "retry_slow", "refused")


class ShardFigures:
    """One shard's label values, bound once."""

    def __init__(self, hub: str, shard: int) -> None:
        self.hub, self.shard = hub, str(shard)
        self.attached = NODES_ATTACHED.labels(hub, self.shard)
        self.attaches = ATTACHES.labels(hub, self.shard)
        self.frames_in = NODE_FRAMES.labels(hub, self.shard, "in")
        self.frames_out = NODE_FRAMES.labels(hub, self.shard, "out")
        self.writes = {outcome: SHARD_WRITES.labels(hub, self.shard, outcome)
                       for outcome in ("written", "to_control", "failed")}
        self.intake = {outcome: SHARD_INTAKE.labels(hub, self.shard, outcome)
                       for outcome in ("taken", "relayed")}
        for reason in REJECTION_REASONS:  # exported at 0 from the start (rate() needs it)
            ATTACH_REJECTIONS.labels(hub, self.shard, reason)

    def rejected(self, reason: str) -> None:
        ATTACH_REJECTIONS.labels(self.hub, self.shard,
                                 reason if reason in REJECTION_REASONS else "refused").inc()
