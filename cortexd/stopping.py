"""The supervisor's stop ladder and its halt (the last step of every exit).

The ladder: STOPPING=1; monitors stop deciding; shards stop accepting and end their
node streams (nodes keep their tasks and reconnect to the next hub); control stops
the API and flushes the store; whatever is left after ``shutdown_grace_s`` is
killed. The halt: no child, ring, FIFO, heartbeat file, ready file, metrics
directory or lock of ours is left behind.
"""

import contextlib
import os
import signal
import time
from typing import TYPE_CHECKING

from cortexd import exitcodes
from cortexd.childproc import report
from cortexd.children import Child, join, signal_child
from cortexd.metrics import procdir
from cortexd.runtime import sd_notify, stop_resource_tracker

if TYPE_CHECKING:
    from cortexd.supervisor import Supervisor


def stop_ladder(sup: "Supervisor", force: bool) -> int:
    """Monitors, then shards (they end their node streams), then control (it flushes the
    store), each by the one deadline; a second signal skips to the forced step."""
    sup.stopping = True
    sd_notify("STOPPING=1")
    if sup.control.conn is not None:  # /readyz says so while the ladder runs
        with contextlib.suppress(OSError):
            report(sup.control.conn, "stopping")
    grace = 0.0 if force else sup.s.shutdown_grace_s
    deadline = time.monotonic() + grace
    # 0. monitors stop deciding (what they recorded and did not apply yet is applied
    #    when they start again).
    for child in sup.monitors:
        signal_child(child, signal.SIGTERM)
    _join(sup, sup.monitors, deadline)
    # 1. shards stop accepting and end their node streams (nodes keep their tasks).
    for child in sup.shards:
        signal_child(child, signal.SIGTERM)
    _join(sup, sup.shards, deadline)
    # 2. control stops the API and flushes the store.
    signal_child(sup.control, signal.SIGTERM)
    _join(sup, [sup.control], deadline)
    return exitcodes.OK

def _join(sup: "Supervisor", children: list[Child], deadline: float) -> None:
    join(children, deadline, skip=sup.signals, on_kill=lambda child: sup.log.warning(
        "child_killed", child=child.name, pid=child.pid))

def halt(sup: "Supervisor") -> None:
    """Last step of every exit: nothing of ours is left behind."""
    for child in (*sup.monitors, *sup.shards, sup.control):
        if child.proc is not None and child.proc.is_alive():
            child.proc.kill()
            child.proc.join(5)
        if child.conn is not None:
            child.conn.close()
    for ring in sup.ring_objs:
        ring.close()
    for hb in sup.monitor_beats:
        hb.close()
        with contextlib.suppress(FileNotFoundError):
            hb.path.unlink()
    for paths in sup.rings:
        for path in paths.all():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    if sup.ready_file_written:
        with contextlib.suppress(FileNotFoundError):
            (sup.s.state_dir / "cortexd.json").unlink()
    if sup.metrics_dir is not None:
        procdir.remove(sup.metrics_dir)
    for fd in sup.locks:
        os.close(fd)
    stop_resource_tracker()
    sup.log.info("cortexd_stopped", shard_restarts=sum(c.restarts for c in sup.shards))
