"""The multiprocess directory of one cortexd instance (prometheus_client's multiprocess mode).

prometheus_client picks its value store when it is first imported, from
``PROMETHEUS_MULTIPROC_DIR``: so the supervisor calls :func:`prepare` before it
imports any metric, and every ``spawn`` child inherits the variable. The
directory is named after the supervisor's pid beside the rings, so a start-up
sweep (:func:`remove_stale`) removes those of dead instances, and
:func:`remove` takes it away at exit. Nothing here imports prometheus_client
at module level.
"""

import contextlib
import os
import shutil
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
SHM_DIR = Path("/dev/shm")


def path_for(pid: int) -> Path:
    return SHM_DIR / f"cortex-{pid}-metrics"


def prepare() -> Path:
    """Create this instance's empty directory and export it to the children."""
    path = path_for(os.getpid())
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700)
    os.environ[ENV] = str(path)
    return path


def mark_dead(pid: int) -> None:
    """A child died: its live gauges leave the aggregate, its counters stay."""
    if not (directory := os.environ.get(ENV)) or not pid:
        return
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def remove_stale() -> list[str]:
    """Remove the directories of cortexd instances whose supervisor is gone."""
    removed = []
    for path in SHM_DIR.glob("cortex-*-metrics"):
        pid = path.name.split("-")[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed
