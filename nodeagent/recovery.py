"""Taking back what an earlier agent process left in the state directory.

A spool on disk at start-up belongs to an attempt the hub may still be waiting for, so
it is kept and reported in ``Hello.tasks``. If it never finished, its process is lost:
the old agent's PTY master is gone. The attempt is finished as ``LOST`` (exit code -1)
and, if the process or its group somehow survived, it is SIGKILLed, but only when the
recorded pid still names the same process (same start time), never a reused pid. A
directory that is not a readable spool is removed.
"""

import shutil
import signal
from pathlib import Path
from typing import Any

from cortex.v1 import node_pb2
from nodeagent import procgroup
from nodeagent.spool import SpoolMeta, TaskSpool, scan

LOST_EXIT_CODE = -1
LOST_REASON = "node agent restarted; the process was lost"


def kill_leftover(meta: SpoolMeta) -> bool:
    """SIGKILL what is left of an attempt's session; True when there was something."""
    st = procgroup.proc_stat(meta.pid) if meta.pid else None
    if st is None or st.start_ticks != meta.pid_start_ticks or st.state == "Z":
        return False
    procgroup.signal_task(meta.pid, signal.SIGKILL, sid=meta.pid)
    return True


def recover(tasks_dir: Path, log: Any) -> list[TaskSpool]:
    spools, bad = scan(tasks_dir)
    for path, why in bad:
        log.warning("spool_discarded", path=str(path), reason=why)
        shutil.rmtree(path, ignore_errors=True)
    for spool in spools:
        meta = spool.meta
        if not meta.finished:
            if kill_leftover(meta):
                log.warning("leftover_killed", task=meta.task_id, attempt=meta.attempt,
                            pid=meta.pid)
            spool.finish(exit_code=LOST_EXIT_CODE,
                         kind=node_pb2.FinishKind.Name(node_pb2.FINISH_KIND_LOST),
                         reason=LOST_REASON)
        log.info("task_recovered", task=meta.task_id, attempt=meta.attempt,
                 output_end=spool.end, kind=meta.kind, exit_code=meta.exit_code)
    return spools
