"""The hub's side of queue waits: why its queued tasks wait (waits.py over this hub's
nodes and the cluster directory's) and the queue timeout a submission may ask for
(``queue_timeout_s``).

Every second the sweep ends each task in this hub's queue that has been QUEUED longer
than its timeout as FAILED with the reason ``queue timeout: …`` saying why it waited
(FAILED: the lifecycle's one end for a task no attempt ran; issue 13). The clock is the
row's ``updated_ms``, the moment it (re)entered QUEUED.
"""

from __future__ import annotations

import asyncio

from cortexd.control.state import HubState, now_ms
from cortexd.control.waits import NodeLoad, WaitExplainer, queue_timed_out
from cortexd.lifecycle import State

SWEEP_S = 1.0


def node_waits(st: HubState) -> WaitExplainer:
    """Over this hub's nodes and, in a cluster, the nodes the directory (as last read:
    placement's offers refresh it while tasks are queued) says other hubs hold."""
    def loads() -> list[NodeLoad]:
        out = {n.node_id: NodeLoad(n.node_id, n.labels, n.capacity, len(n.running),
                                   n.attached, n.draining) for n in st.nodes.values()}
        for node_id, e in st.coord.known_directory().items():
            if e.host != st.coord.host_id:
                out[node_id] = NodeLoad(node_id, e.labels, e.capacity, e.running, True,
                                        e.draining)
        return list(out.values())
    explainer = WaitExplainer(loads, lambda: st.coord.clustered)
    explainer.workspace_nodes = lambda owner, name: st.workspace_nodes(owner, name)
    return explainer


async def sweep_queue_timeouts(st: HubState, waits: WaitExplainer) -> int:
    """End every queued task past its queue timeout; how many were ended."""
    now = now_ms()
    due = [t for t in list(st.queue.values())
           if queue_timed_out(t.updated_ms, t.queue_timeout_s, now)]
    for task in due:
        if st.queue.pop(task.task_id, None) is None:
            continue  # placed meanwhile
        st.hops.pop(task.task_id, None)
        wait = waits.explain_task(task)
        why = wait.text or "no node took it in time"
        await st.finish(task, State.FAILED,
                        f"queue timeout: QUEUED for {task.queue_timeout_s}s; {why}")
    return len(due)


async def run_queue_timeouts(st: HubState) -> None:
    waits = node_waits(st)
    while True:
        await asyncio.sleep(SWEEP_S)
        try:
            if st.queue:
                await sweep_queue_timeouts(st, waits)
        except Exception:  # a store outage: the next sweep tries again
            st.log.exception("queue_timeout_sweep_failed")
